"""Bulk intake throughput: ``POST /api/v1/predictions/`` with 1,000 predictions each.

The model has 30 numeric features and a linear explainer (no artifact); its routing
policy sends about 20% of the generated predictions to review: mostly low confidence,
plus a rare risk rule and a 1% audit sample, so every routing path runs. The client
pre-serialises every body before the clock starts and keeps one keep-alive connection
per thread, so what is measured is the server (and PostgreSQL, on the same cores).
"""

from __future__ import annotations

import json
import math
import random
import statistics
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from .cpu import CpuMeter, CpuShare
from .harness import BenchFailure, Context, Row

N_FEATURES = 30
ITEMS_PER_REQUEST = 1000
MODEL_NAME, MODEL_VERSION = "bench-intake", "1"
MODEL_REF = f"{MODEL_NAME}:{MODEL_VERSION}"
LABELS = ("approve", "deny")
FEATURE_NAMES = [f"f{i:02d}" for i in range(N_FEATURES)]
TARGET_LOW_CONFIDENCE = 0.18  # plus ~1% risk rule and ~1% audit: ~20% routed
HIGH_AMOUNT = 25_000  # amounts are exponential with mean 5,000: ~0.7% reach it
AUDIT_RATE = 0.01
ROUTED_SHARE_BOUNDS = (0.15, 0.25)


@dataclass(frozen=True)
class LinearModel:
    coef: list[float]

    def p_deny(self, x: list[float]) -> float:
        logit = math.fsum(c * v for c, v in zip(self.coef, x, strict=True))
        return 1.0 / (1.0 + math.exp(-logit))


def linear_model(seed: int = 7) -> LinearModel:
    rng = random.Random(seed)
    # A logit with a standard deviation of about 2: most predictions are confident.
    scale = 2 / math.sqrt(N_FEATURES)
    return LinearModel(coef=[round(rng.gauss(0, scale), 4) for _ in range(N_FEATURES)])


def prediction_item(rng: random.Random, model: LinearModel, external_id: str) -> dict:
    x = [round(rng.gauss(0, 1), 4) for _ in range(N_FEATURES)]
    deny = round(model.p_deny(x), 6)
    approve = 1.0 - deny
    return {
        "model": MODEL_REF,
        "external_id": external_id,
        "features": dict(zip(FEATURE_NAMES, x, strict=True)),
        "prediction": {
            "label": "deny" if deny > approve else "approve",
            "probabilities": {"approve": approve, "deny": deny},
        },
        "context": {"amount": int(rng.expovariate(1 / 5000)), "channel": "web"},
    }


def min_confidence_for(model: LinearModel, share: float, sample: int = 20_000) -> float:
    """The threshold below which ``share`` of generated predictions fall."""
    rng = random.Random(11)
    tops = sorted(
        max(p, 1 - p)
        for p in (model.p_deny([rng.gauss(0, 1) for _ in range(N_FEATURES)]) for _ in range(sample))
    )
    return round(tops[int(share * sample)], 4)


def model_spec(model: LinearModel, min_confidence: float) -> dict:
    return {
        "name": MODEL_NAME,
        "version": MODEL_VERSION,
        "task": "binary_classification",
        "labels": list(LABELS),
        "features": [{"name": name, "type": "numeric"} for name in FEATURE_NAMES],
        "explainer": {
            "kind": "linear",
            "coef": model.coef,
            "intercept": 0.0,
            "background_mean": [0.0] * N_FEATURES,
        },
        "routing": {
            "min_confidence": min_confidence,
            "risk_rules": [
                {
                    "field": "context.amount",
                    "op": ">=",
                    "value": HIGH_AMOUNT,
                    "reason": "high_amount",
                }
            ],
            "audit_rate": AUDIT_RATE,
            "sla": {"default": "PT4H", "high_amount": "PT1H"},
            "queue": "default",
        },
    }


def batch_bodies(rng: random.Random, model: LinearModel, prefix: str, count: int) -> list[bytes]:
    """``count`` serialised batch bodies; external ids ``<prefix>-<request>-<item>``."""
    return [
        json.dumps(
            {
                "items": [
                    prediction_item(rng, model, f"{prefix}-{r}-{i}")
                    for i in range(ITEMS_PER_REQUEST)
                ]
            }
        ).encode()
        for r in range(count)
    ]


@dataclass
class Answer:
    status: int
    seconds: float
    body: bytes


def post_all(ctx: Context, bodies: list[bytes], threads: int) -> tuple[float, list[Answer]]:
    """Send ``bodies`` from ``threads`` keep-alive clients; wall time and the answers."""
    answers: list[Answer | None] = [None] * len(bodies)
    next_index = iter(range(len(bodies)))
    lock = threading.Lock()
    start = threading.Barrier(threads + 1)
    failures: list[Exception] = []

    def client() -> None:
        http = ctx.http(ctx.producer_token)
        start.wait()
        try:
            while True:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    return
                began = time.perf_counter()
                status, raw = http.request("POST", "/api/v1/predictions/", bodies[index])
                answers[index] = Answer(status, time.perf_counter() - began, raw)
        except Exception as exc:
            failures.append(exc)
        finally:
            http.close()

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - began
    if failures:
        raise BenchFailure(f"client error: {failures[0]!r}")
    return elapsed, [a for a in answers if a is not None]


def check_answers(answers: list[Answer]) -> tuple[int, int]:
    """Every answer a 200 with no errors and every item created; (created, routed)."""
    created = routed = 0
    for answer in answers:
        if answer.status != 200:
            raise BenchFailure(f"intake answered {answer.status}: {answer.body[:500]!r}")
        body = json.loads(answer.body)
        if body["errors"] or body["created"] != ITEMS_PER_REQUEST:
            sample = next((r for r in body["results"] if "error" in r), None)
            raise BenchFailure(
                f"intake created {body['created']}, errors {body['errors']}: {sample}"
            )
        for result in body["results"]:
            if result["routed"]:
                routed += 1
                if result["review_item"] is None or result["status"] != "pending_review":
                    raise BenchFailure(f"routed without a review item: {result}")
        created += body["created"]
    return created, routed


def bench_bulk_intake(ctx: Context) -> list[Row]:
    admin = ctx.http(ctx.admin_token)
    model = linear_model()
    min_confidence = min_confidence_for(model, TARGET_LOW_CONFIDENCE)
    status, body = admin.json("POST", "/api/v1/models/", model_spec(model, min_confidence))
    admin.close()
    if status != 201:
        raise BenchFailure(f"model registration answered {status}: {body}")

    rng = random.Random(2024)
    threads = ctx.client_threads
    # Warm up: every worker compiles the model and opens its connections.
    _, warm = post_all(ctx, batch_bodies(rng, model, "warm", 2 * threads), threads)
    check_answers(warm)

    meter = CpuMeter(ctx.server, database=ctx.database_name)
    rates, latencies, shares, created, routed = [], [], [], 0, 0
    for run in range(ctx.runs):
        bodies = batch_bodies(rng, model, f"run{run}", ctx.requests_per_run)
        meter.wait_for_quiet(timeout=ctx.quiet_wait)
        meter.start()
        elapsed, answers = post_all(ctx, bodies, threads)
        share = meter.stop()
        run_created, run_routed = check_answers(answers)
        created += run_created
        routed += run_routed
        rates.append(run_created / elapsed)
        latencies.extend(a.seconds for a in answers)
        if share is not None:
            shares.append((share, run_created))
        print(
            f"  intake run {run + 1}/{ctx.runs}: {run_created / elapsed:,.0f} predictions/s, "
            f"{elapsed:.2f} s{cpu_note(share, run_created)}",
            flush=True,
        )

    routed_share = routed / created
    low, high = ROUTED_SHARE_BOUNDS
    if not low <= routed_share <= high:
        raise BenchFailure(f"routed share {routed_share:.1%} is outside {low:.0%}-{high:.0%}")
    latencies.sort()
    p50 = latencies[len(latencies) // 2]
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
    note = (
        f"median of {ctx.runs} runs x {ctx.requests_per_run} requests "
        f"(range {min(rates):,.0f}-{max(rates):,.0f}); {threads} client threads, "
        f"{ctx.server.description}; request p50 {p50 * 1000:,.0f} ms, "
        f"p95 {p95 * 1000:,.0f} ms; routed {routed_share:.1%}"
    )
    rows = [
        Row(
            name="bulk intake (1,000/request, 30 features, ~20% routed)",
            figure=statistics.median(rates),
            unit="predictions/s",
            goal=">= 6,000 predictions/s",
            note=note + foreign_note(s for s, _ in shares),
        )
    ]
    if shares:
        web = statistics.median(cpu_ms_per_1000(s.ours, n) for s, n in shares)
        database = statistics.median(cpu_ms_per_1000(s.postgres, n) for s, n in shares)
        rows.append(
            Row(
                name="bulk intake CPU per 1,000 predictions",
                figure=web + database,
                unit="CPU ms",
                note=(
                    f"medians over the runs: gunicorn and the client {web:,.0f} ms, "
                    f"PostgreSQL {database:,.0f} ms; less sensitive than throughput to "
                    "other load on the machine"
                ),
            )
        )
    return rows


def cpu_ms_per_1000(seconds: float, predictions: int) -> float:
    return seconds * 1000 * 1000 / predictions


def cpu_note(share: CpuShare | None, created: int) -> str:
    if share is None:
        return ""
    return (
        f"; CPU per 1,000: {cpu_ms_per_1000(share.ours, created):,.0f} ms web, "
        f"{cpu_ms_per_1000(share.postgres, created):,.0f} ms PostgreSQL; "
        f"machine busy {share.busy_share:.0%}, other processes {share.foreign_share:.0%}"
    )


def foreign_note(shares: Iterable[CpuShare]) -> str:
    """A warning when other processes took a noticeable part of the machine."""
    worst = max((s.foreign_share for s in shares), default=0.0)
    if worst < 0.05:
        return ""
    return f"; other processes took up to {worst:.0%} of the CPU during the runs"
