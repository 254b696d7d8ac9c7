"""What one claim and one decision cost, measured in-process.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/reviewqueue \\
        .venv/bin/python bench/profile_claims.py [--cycles 500] [--pyinstrument | --cprofile]

Builds ``<database>_profile`` (dropped afterwards), registers the model of
``bench/claims.py``, makes ready items in SQL and runs claim + decide cycles of one
reviewer through Django's full request stack (middleware, DRF, the services,
PostgreSQL), exactly as gunicorn would call them. Reported per request: the SQL
statements sent (``BEGIN`` and ``COMMIT`` included, as psycopg sends them), the wall
time, this process's CPU and the CPU of the PostgreSQL backend serving it (from
``/proc``; both processes run on this machine). CPU time is the steady figure on a
shared machine: wall time moves with whatever else runs. ``--pyinstrument`` (if
installed) or ``--cprofile`` print a call tree of a batch of cycles instead.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import claims, harness

_TICK = os.sysconf("SC_CLK_TCK")
# The cProfile order: PROFILE_SORT=cumulative for the call tree's heavy branches.
SORT = os.environ.get("PROFILE_SORT", "tottime")


def backend_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def setup(database_url: str, broker_url: str, items: int) -> tuple[Any, Any]:
    """A migrated database with ready items; Django set up here; the reviewer's client."""
    env = harness.django_in_process(database_url=database_url, broker_url=broker_url)
    from django.test import Client

    from apps.accounts.services import account_token, account_upsert

    admin = account_upsert(username="profile-admin", roles=["admin"])
    reviewer = account_upsert(username="profile-reviewer", roles=["reviewer"])
    admin_client = Client(HTTP_AUTHORIZATION=f"Token {account_token(user=admin)}")
    response = admin_client.post("/api/v1/models/", claims.MODEL, content_type="application/json")
    assert response.status_code == 201, response.content
    import psycopg

    with psycopg.connect(database_url) as conn:
        (queue_id,) = conn.execute("SELECT id FROM queues_queue WHERE name = 'bench'").fetchone()
    claims.make_ready_items(database_url, response.json()["id"], queue_id, items)
    return Client(HTTP_AUTHORIZATION=f"Token {account_token(user=reviewer)}"), env


def cycle(client: Any) -> None:
    response = client.post("/api/v1/queue/claim/", content_type="application/json")
    assert response.status_code == 200, response.content[:500]
    item = response.json()
    response = client.post(
        f"/api/v1/reviews/{item['id']}/decide/",
        {"lease_token": item["lease"]["token"], "label": "approve"},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content[:500]


def measure(client: Any, cycles: int) -> None:
    """Run ``cycles`` cycles; print the statements of one and the costs per request."""
    from django.db import connection

    def post(path: str, body: dict | None = None) -> Any:
        return client.post(path, body or {}, content_type="application/json")

    statements: dict[str, list[str]] = {}
    spent: dict[str, list[tuple[float, float, float]]] = {"claim": [], "decide": []}
    connection.ensure_connection()
    backend = connection.cursor().connection.info.backend_pid
    log: list[str] = []

    def logger(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        log.append(sql)
        return execute(sql, params, many, context)

    for n in range(cycles):
        item_id = token = None
        for kind in ("claim", "decide"):
            log.clear()
            wall, cpu, pg = time.perf_counter(), time.process_time(), backend_cpu_seconds(backend)
            with connection.execute_wrapper(logger):
                if kind == "claim":
                    response = post("/api/v1/queue/claim/")
                else:
                    response = post(
                        f"/api/v1/reviews/{item_id}/decide/",
                        {"lease_token": token, "label": "approve"},
                    )
            spent[kind].append(
                (
                    time.perf_counter() - wall,
                    time.process_time() - cpu,
                    backend_cpu_seconds(backend) - pg,
                )
            )
            assert response.status_code == 200, response.content[:500]
            if kind == "claim":
                item_id, token = response.json()["id"], response.json()["lease"]["token"]
            if n == cycles - 1:
                statements[kind] = list(log)
    for kind, sqls in statements.items():
        print(f"\n{kind}: {len(sqls)} statements through Django (+ BEGIN and COMMIT)")
        for sql in sqls:
            print("   ", re.sub(r"\s+", " ", sql)[:150])
    print(f"\n{cycles} cycles of one reviewer, medians per request:\n")
    print("| request | wall ms | web process CPU ms | PostgreSQL backend CPU ms |")
    print("|---|---:|---:|---:|")
    for kind, values in spent.items():
        wall, cpu, pg = (statistics.median(v[i] for v in values) * 1000 for i in range(3))
        mean_pg = statistics.fmean(v[2] for v in values) * 1000
        print(f"| {kind} | {wall:.2f} | {cpu:.2f} | {pg:.2f} (mean {mean_pg:.2f}) |")
    per_cycle = sum(statistics.fmean(v[1] + v[2] for v in values) for values in spent.values())
    print(f"\nCPU per cycle (web process + PostgreSQL backend, means): {per_cycle * 1000:.2f} ms")


def call_tree(client: Any, cycles: int, *, pyinstrument: bool) -> None:
    if pyinstrument:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0002)
        profiler.start()
        for _ in range(cycles):
            cycle(client)
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))
        return
    import cProfile
    import pstats

    profile = cProfile.Profile()
    profile.enable()
    for _ in range(cycles):
        cycle(client)
    profile.disable()
    pstats.Stats(profile).sort_stats(SORT).print_stats(70)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=500)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--pyinstrument", action="store_true")
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args()

    with harness.profile_database() as (database_url, broker_url):
        client, _ = setup(database_url, broker_url, max(args.items, 2 * args.cycles + 100))
        for _ in range(50):  # warm: imports, caches, the connection
            cycle(client)
        if args.pyinstrument or args.cprofile:
            call_tree(client, args.cycles, pyinstrument=args.pyinstrument)
        else:
            measure(client, args.cycles)
    return 0


if __name__ == "__main__":
    sys.exit(main())
