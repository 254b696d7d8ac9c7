"""Run the benchmarks against a real deployment and print one table.

    make bench                       # or: DATABASE_URL=... .venv/bin/python bench/run.py
    .venv/bin/python bench/run.py --only intake --runs 3

Each run creates ``<database>_bench`` next to ``DATABASE_URL``'s database (dropped and
recreated), migrates it, creates an admin and a producer account, starts gunicorn with
a Redis broker (``redis://127.0.0.1:6379/14`` unless ``BENCH_BROKER_URL`` says
otherwise) and calls every function in ``BENCHMARKS``. Afterwards it stops gunicorn,
drops the database and flushes that Redis database. The table is printed and written
as markdown to ``bench/results/latest.md``.

The server runs the production settings (plain HTTP on the loopback). The machine may
be shared: before each timed run a benchmark may wait (``--quiet-wait``) for other
processes to calm down, and the intake rows say how much of the CPU they took anyway.

To add a benchmark: write a function ``(ctx: Context) -> list[Row]`` in a module under
``bench/`` and append it to ``BENCHMARKS``. Raise ``BenchFailure`` when the answers are
wrong; the table then shows the row as failed and the run exits non-zero.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import claims, explanations, harness, intake, labels, review_screen, table
from bench.harness import BenchFailure, Context, Row

Benchmark = Callable[[Context], list[Row]]

BENCHMARKS: list[Benchmark] = [
    intake.bench_bulk_intake,
    claims.bench_claim_decide,
    explanations.bench_explanations,
    review_screen.bench_review_screen,
    labels.bench_label_feed,
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="run only benchmarks whose function name contains this")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per benchmark")
    parser.add_argument("--requests", type=int, default=20, help="requests per timed run")
    parser.add_argument("--client-threads", type=int, default=4)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--worker-class", default="gthread", help="gunicorn worker class")
    parser.add_argument("--threads", type=int, default=1, help="threads per gthread worker")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="before each timed run, wait up to this many seconds for other processes to "
        "use less than 20%% of the CPU (0: do not wait)",
    )
    parser.add_argument(
        "--keep-database", action="store_true", help="leave the bench database for inspection"
    )
    return parser.parse_args(argv)


def run_benchmarks(ctx: Context, benchmarks: list[Benchmark]) -> tuple[list[Row], bool]:
    rows: list[Row] = []
    ok = True
    for benchmark in benchmarks:
        label = benchmark.__name__.removeprefix("bench_")
        print(f"{label} ...", flush=True)
        began = time.perf_counter()
        try:
            rows.extend(benchmark(ctx))
        except BenchFailure as exc:
            ok = False
            rows.append(Row(label, "FAILED", "", note=str(exc)[:300]))
            print(f"{label} FAILED: {exc}", file=sys.stderr)
        except Exception as exc:
            ok = False
            rows.append(Row(label, "ERROR", "", note=f"{type(exc).__name__}: {exc}"[:300]))
            traceback.print_exc()
        print(f"{label}: {time.perf_counter() - began:.1f} s", flush=True)
    return rows, ok


def write_markdown(rows: list[Row], facts: dict[str, str]) -> Path:
    harness.RESULTS.mkdir(exist_ok=True)
    path = harness.RESULTS / "latest.md"
    about = ", ".join(f"{k} {v}" for k, v in facts.items())
    path.write_text(f"# Benchmark results\n\n{about}\n\n{table.table_markdown(rows)}\n")
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    benchmarks = [b for b in BENCHMARKS if not args.only or args.only in b.__name__]
    if not benchmarks:
        print(f"no benchmark matches {args.only!r}", file=sys.stderr)
        return 2

    database_url = harness.bench_database_url(
        os.environ.get("DATABASE_URL", harness.DEFAULT_DATABASE_URL)
    )
    broker_url = os.environ.get("BENCH_BROKER_URL", harness.DEFAULT_BROKER_URL)
    env = harness.server_environment(database_url=database_url, broker_url=broker_url)
    server = None
    rows: list[Row] = []
    facts: dict[str, str] = {}
    ok = False
    with tempfile.TemporaryDirectory(prefix="reviewqueue-bench-") as scratch:
        try:
            print(f"database {database_url.rsplit('/', 1)[-1]}: creating and migrating", flush=True)
            harness.database_recreate(database_url)
            harness.redis_flush(broker_url)
            harness.manage(env, "migrate", "--noinput")
            admin_token = harness.account_create(env, "bench-admin", "admin")
            producer_token = harness.account_create(env, "bench-producer", "producer")
            server = harness.server_start(
                env,
                workers=args.workers,
                worker_class=args.worker_class,
                threads=args.threads,
                log_path=Path(scratch) / "gunicorn.log",
            )
            print(f"gunicorn: {server.description} at {server.base_url}", flush=True)
            facts = table.machine_facts(database_url)
            ctx = Context(
                server=server,
                env=env,
                database_url=database_url,
                admin_token=admin_token,
                producer_token=producer_token,
                client_threads=args.client_threads,
                runs=args.runs,
                requests_per_run=args.requests,
                quiet_wait=args.quiet_wait,
                facts=facts,
            )
            rows, ok = run_benchmarks(ctx, benchmarks)
            if not ok and server.log_tail():
                print(f"gunicorn log (tail):\n{server.log_tail()}", file=sys.stderr)
        finally:
            if server is not None:
                server.stop()
            if not args.keep_database:
                harness.database_drop(database_url)
            harness.redis_flush(broker_url)

    print()
    print(table.table_text(rows))
    path = write_markdown(rows, facts)
    print(f"\nwritten to {path.relative_to(harness.ROOT)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
