"""Explanations: worker throughput against the native call, and ingest-to-claimable.

A 200-tree LightGBM on 50 numeric features is registered; a Celery worker (solo pool,
as deployed) runs against the bench database and broker.

- Throughput: 2,000 routed predictions are posted (two bulk requests) to a warm
  worker; rows/s from the first request to the last item explained, beside LightGBM's
  own ``pred_contrib`` on the same rows in this process.
- Latency: predictions arrive at a steady 200/s (batches of 10 every 50 ms) for
  ``LATENCY_SECONDS``; each item's ingest-to-claimable time is read from PostgreSQL
  (``updated_at - created_at`` of the item once explained): p50 and p95.
"""

from __future__ import annotations

import base64
import http.client as http_client
import os
import subprocess
import sys
import time

import numpy as np
import psycopg

from .harness import ROOT, BenchFailure, Context, Http, Row

N_FEATURES = 50
N_TREES = 200
ROWS = 2000
RATE = 200
BATCH = 10
LATENCY_SECONDS = 20.0
MODEL_REF = "bench-shap:1"


def _train():
    import lightgbm

    rng = np.random.default_rng(11)
    X = rng.normal(size=(5000, N_FEATURES))
    y = (X[:, :8].sum(axis=1) + rng.normal(size=5000) > 0).astype(int)
    model = lightgbm.LGBMClassifier(
        n_estimators=N_TREES, num_leaves=31, verbose=-1, random_state=11, n_jobs=1
    )
    return model.fit(X, y).booster_


def _items(booster, prefix: str, start: int, n: int) -> list[dict]:
    X = np.random.default_rng(start).normal(size=(n, N_FEATURES))
    p = booster.predict(X)
    return [
        {
            "model": MODEL_REF,
            "external_id": f"{prefix}-{start + i}",
            "features": {f"f{j}": float(X[i, j]) for j in range(N_FEATURES)},
            "prediction": {
                "label": "yes" if p[i] >= 0.5 else "no",
                "probabilities": {"no": float(1 - p[i]), "yes": float(p[i])},
            },
        }
        for i in range(n)
    ]


def _post(http: Http, items: list[dict]) -> None:
    try:
        status, body = http.json("POST", "/api/v1/predictions/", {"items": items})
    except (ConnectionError, http_client.HTTPException):
        # gunicorn closed the idle keep-alive connection while we waited: reconnect.
        http.close()
        status, body = http.json("POST", "/api/v1/predictions/", {"items": items})
    if status != 200 or body["errors"]:
        raise BenchFailure(f"intake answered {status}: {str(body)[:200]}")


def _explained(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        # Only this benchmark's queue: other benchmarks leave explained items behind.
        (n,) = conn.execute(
            """
            SELECT count(*) FROM reviews_reviewitem i JOIN queues_queue q ON q.id = i.queue_id
            WHERE q.name = 'shap' AND i.explanation_status = 'ready'
            """
        ).fetchone()
    return n


def _wait_explained(database_url: str, total: int, timeout: float = 300.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _explained(database_url) >= total:
            return time.monotonic()
        time.sleep(0.05)
    raise BenchFailure(f"only {_explained(database_url)} of {total} items explained in time")


def bench_explanations(ctx: Context) -> list[Row]:
    booster = _train()
    spec = {
        "name": "bench-shap",
        "version": "1",
        "task": "binary_classification",
        "labels": ["no", "yes"],
        "features": [{"name": f"f{i}", "type": "numeric"} for i in range(N_FEATURES)],
        "explainer": {"kind": "lightgbm"},
        "routing": {"min_confidence": 1.0, "queue": "shap"},
        "artifact": base64.b64encode(booster.model_to_string().encode()).decode(),
    }
    admin = Http(ctx.server.base_url, ctx.admin_token)
    status, body = admin.json("POST", "/api/v1/models/", spec)
    admin.close()
    if status != 201:
        raise BenchFailure(f"registration answered {status}: {str(body)[:200]}")

    # The native call on the same rows, in this process.
    X = np.random.default_rng(0).normal(size=(ROWS, N_FEATURES))
    began = time.perf_counter()
    booster.predict(X, pred_contrib=True)
    native = ROWS / (time.perf_counter() - began)

    env = dict(ctx.env)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "reviewqueue",
            "worker",
            "--pool",
            "solo",
            "--without-mingle",
            "--without-gossip",
            "--loglevel",
            "WARNING",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    producer = Http(ctx.server.base_url, ctx.producer_token)
    try:
        # Warm the worker: the explainer is built once per process and version.
        _post(producer, _items(booster, "warm", 0, 10))
        _wait_explained(ctx.database_url, 10)
        first = _items(booster, "bulk", 0, 1000) + _items(booster, "bulk", 1000, 1000)
        began = time.monotonic()
        _post(producer, first[:1000])
        _post(producer, first[1000:])
        done = _wait_explained(ctx.database_url, 10 + ROWS)
        through_worker = ROWS / (done - began)

        # Steady 200 predictions/s.
        start, sent, n = time.monotonic(), 0, 0
        while time.monotonic() - start < LATENCY_SECONDS:
            _post(producer, _items(booster, "steady", n, BATCH))
            n += BATCH
            sent += BATCH
            pause = start + sent / RATE - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        _wait_explained(ctx.database_url, 10 + ROWS + sent)
        with psycopg.connect(ctx.database_url) as conn:
            latencies = [
                row[0]
                for row in conn.execute(
                    """
                    SELECT extract(epoch FROM i.updated_at - i.created_at)
                    FROM reviews_reviewitem i JOIN predictions_prediction p
                      ON p.id = i.prediction_id
                    WHERE p.external_id LIKE %s AND i.status = 'ready'
                    ORDER BY 1
                    """,
                    ["steady-%"],
                ).fetchall()
            ]
    finally:
        producer.close()
        worker.terminate()
        worker.wait(timeout=30)
    if not latencies:
        raise BenchFailure("no latencies measured")
    p50 = float(latencies[len(latencies) // 2])
    p95 = float(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))])
    rate = sent / LATENCY_SECONDS
    return [
        Row(
            "SHAP native pred_contrib (200 trees, 50 features)",
            round(native),
            "rows/s",
            "",
            f"{ROWS} rows in one call, this process",
        ),
        Row(
            "SHAP through the worker, end to end",
            round(through_worker),
            "rows/s",
            f">= {round(native / 2)} rows/s (within 2x of native)",
            f"{ROWS} routed predictions in 2 bulk requests to a warm solo worker, "
            f"{os.cpu_count()} cores shared with gunicorn and PostgreSQL",
        ),
        Row(
            "ingest-to-claimable p50",
            round(p50 * 1000),
            "ms",
            "",
            f"{len(latencies)} items at {rate:.0f} predictions/s, batches of {BATCH}",
        ),
        Row("ingest-to-claimable p95", round(p95 * 1000), "ms", "<= 2000 ms"),
    ]
