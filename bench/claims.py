"""Claim + decide cycles through HTTP at 1, 8 and 32 concurrent reviewers.

100,000 ready items wait in one queue (made directly in SQL: the setup is not what is
measured). Each reviewer thread has its own account and keep-alive connection and
loops: ``POST /api/v1/queue/claim/``, then ``POST /api/v1/reviews/{id}/decide/``
accepting the model's label. Reported: completed cycles per second, the claim's
latency as the client sees it (p50, p99), and the CPU one cycle cost (gunicorn, the
client threads and PostgreSQL together: the steady figure on a shared machine).
Afterwards every decided item must have exactly one decision, and no item two, and
the audit chain must verify.
"""

from __future__ import annotations

import json
import re
import statistics
import threading
import time

import psycopg

from .cpu import CpuMeter
from .harness import (
    BenchFailure,
    Context,
    Http,
    Row,
    linear_model_spec,
    ready_items_insert,
)

ITEMS = 100_000
LEVELS = (1, 8, 32)
SECONDS_PER_LEVEL = 15.0
N_FEATURES = 8
MODEL = linear_model_spec("bench-claims", n_features=N_FEATURES, queue="bench")

ACCOUNTS = """
from apps.accounts.services import account_token, account_upsert
for i in range({n}):
    user = account_upsert(username=f"bench-reviewer-{{i}}", roles=["reviewer"])
    print(account_token(user=user))
"""


def make_ready_items(database_url: str, model_id: int, queue_id: int, items: int = ITEMS) -> None:
    """``items`` routed predictions, each with a ready, explained review item, in SQL."""
    features = json.dumps({f"f{i}": 0.5 for i in range(N_FEATURES)})
    probabilities = json.dumps({"approve": 0.6, "deny": 0.4})
    with psycopg.connect(database_url) as conn:
        conn.execute(
            """
            INSERT INTO predictions_prediction
                (model_version_id, external_id, content_hash, features, context, label,
                 probabilities, routed, reasons, selection_probability, created_at)
            SELECT %s, 'claim-' || g, md5(g::text), %s::jsonb, '{}'::jsonb, 'approve',
                   %s::jsonb, true, '["low_confidence"]'::jsonb, 1.0, now()
            FROM generate_series(1, %s) AS g
            """,
            [model_id, features, probabilities, items],
        )
        ready_items_insert(conn, model_id=model_id, queue_id=queue_id)
        conn.execute("ANALYZE reviews_reviewitem")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _run_level(ctx: Context, tokens: list[str]) -> tuple[int, list[float], int]:
    """Reviewers cycle until the time is up; (cycles, claim latencies, errors)."""
    cycles, latencies, errors = [0], [], [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + SECONDS_PER_LEVEL

    def reviewer(token: str) -> None:
        http = Http(ctx.server.base_url, token)
        done, mine, failed = 0, [], 0
        try:
            while time.monotonic() < stop_at:
                began = time.perf_counter()
                status, item = http.json("POST", "/api/v1/queue/claim/")
                mine.append(time.perf_counter() - began)
                if status != 200:
                    failed += 1
                    continue
                status, _ = http.json(
                    "POST",
                    f"/api/v1/reviews/{item['id']}/decide/",
                    {"lease_token": item["lease"]["token"], "label": "approve"},
                )
                if status == 200:
                    done += 1
                else:
                    failed += 1
        finally:
            http.close()
            with lock:
                cycles[0] += done
                latencies.extend(mine)
                errors[0] += failed

    threads = [threading.Thread(target=reviewer, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return cycles[0], latencies, errors[0]


def bench_claim_decide(ctx: Context) -> list[Row]:
    admin = Http(ctx.server.base_url, ctx.admin_token)
    status, model = admin.json("POST", "/api/v1/models/", MODEL)
    admin.close()
    if status != 201:
        raise BenchFailure(f"model registration answered {status}: {model}")
    with psycopg.connect(ctx.database_url) as conn:
        (queue_id,) = conn.execute("SELECT id FROM queues_queue WHERE name = 'bench'").fetchone()
    make_ready_items(ctx.database_url, model["id"], queue_id)
    # The shell may print a line of its own first: keep the 40-hex-digit tokens only.
    output = ctx.manage("shell", "-c", ACCOUNTS.format(n=max(LEVELS)))
    tokens = re.findall(r"^[0-9a-f]{40}$", output, flags=re.MULTILINE)

    rows = []
    meter = CpuMeter(ctx.server, database=ctx.database_name)
    for level in LEVELS:
        meter.wait_for_quiet(timeout=ctx.quiet_wait)
        meter.start()
        began = time.monotonic()
        cycles, latencies, errors = _run_level(ctx, tokens[:level])
        elapsed = time.monotonic() - began
        share = meter.stop()
        if errors:
            raise BenchFailure(f"{errors} claims or decisions failed at {level} reviewers")
        rate = cycles / elapsed
        p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
        note = f"{cycles} cycles in {elapsed:.0f} s; {ctx.server.description}"
        if share is not None:
            note += (
                f"; machine busy {share.busy_share:.0%}, other processes {share.foreign_share:.0%}"
            )
        rows.append(
            Row(
                f"claim+decide cycles/s, {level} reviewers",
                round(rate),
                "cycles/s",
                ">= 300 decisions/s" if level == 32 else "",
                note,
            )
        )
        if share is not None and cycles:
            rows.append(
                Row(
                    f"CPU per cycle, {level} reviewers",
                    round((share.ours + share.postgres) / cycles * 1000, 1),
                    "CPU ms",
                    "",
                    f"web and client {share.ours / cycles * 1000:.1f} ms, "
                    f"PostgreSQL {share.postgres / cycles * 1000:.1f} ms",
                )
            )
        rows.append(
            Row(
                f"claim latency p50, {level} reviewers",
                round(p50 * 1000, 1),
                "ms",
                "",
                f"mean {statistics.fmean(latencies) * 1000:.1f} ms",
            )
        )
        rows.append(
            Row(
                f"claim latency p99, {level} reviewers",
                round(p99 * 1000, 1),
                "ms",
                "< 50 ms" if level == 32 else "",
            )
        )

    with psycopg.connect(ctx.database_url) as conn:
        decided, distinct, twice = conn.execute(
            """
            SELECT count(*), count(DISTINCT item_id),
                   (SELECT count(*) FROM reviews_reviewitem
                     WHERE status = 'decided'
                       AND id NOT IN (SELECT item_id FROM reviews_decision))
            FROM reviews_decision
            """
        ).fetchone()
    if decided != distinct or twice:
        raise BenchFailure(f"{decided} decisions for {distinct} items; {twice} without one")
    try:
        ctx.manage("audit_verify")
    except RuntimeError as exc:
        raise BenchFailure(f"the audit chain does not verify: {exc}") from exc
    return rows
