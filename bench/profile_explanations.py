"""Where the explanation worker's time goes, measured in-process.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/reviewqueue \\
        .venv/bin/python bench/profile_explanations.py [--rows 1000] [--cprofile]

Builds ``<database>_profile`` (dropped afterwards), registers the 200-tree LightGBM of
``bench/explanations.py``, stores routed predictions through the intake service (no
broker: their messages are dropped) and runs the worker's task body on them in this
process, in batches of ``--batch``. Reported: LightGBM's own ``pred_contrib`` on the
same rows, the task's time and CPU per row, and its phases (loading the items, SHAP,
storing). ``--cprofile`` prints the heaviest functions instead.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import explanations, harness


def setup(database_url: str, broker_url: str) -> tuple[Any, Any]:
    harness.django_in_process(database_url=database_url, broker_url=broker_url)
    from django.test import Client

    from apps.accounts.services import account_token, account_upsert

    admin = account_upsert(username="profile-admin", roles=["admin"])
    producer = account_upsert(username="profile-producer", roles=["producer"])
    booster = explanations._train()
    spec = {
        "name": "bench-shap",
        "version": "1",
        "task": "binary_classification",
        "labels": ["no", "yes"],
        "features": [{"name": f"f{i}", "type": "numeric"} for i in range(explanations.N_FEATURES)],
        "explainer": {"kind": "lightgbm"},
        "routing": {"min_confidence": 1.0, "queue": "shap"},
        "artifact": base64.b64encode(booster.model_to_string().encode()).decode(),
    }
    admin_client = Client(HTTP_AUTHORIZATION=f"Token {account_token(user=admin)}")
    response = admin_client.post("/api/v1/models/", spec, content_type="application/json")
    assert response.status_code == 201, response.content
    return booster, Client(HTTP_AUTHORIZATION=f"Token {account_token(user=producer)}")


def ingest(client: Any, booster: Any, prefix: str, n: int) -> list[int]:
    """Post ``n`` routed predictions (no broker: no message sent); their item ids."""
    from unittest import mock

    ids = []
    for start in range(0, n, 500):
        items = explanations._items(booster, prefix, start, min(500, n - start))
        # The intake enqueues after commit; here the worker's body is run by hand.
        with mock.patch("apps.reviews.tasks.explain_items.delay"):
            response = client.post(
                "/api/v1/predictions/", {"items": items}, content_type="application/json"
            )
        assert response.status_code == 200, response.content[:300]
        ids += [r["review_item"] for r in response.json()["results"]]
    return ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args()

    with harness.profile_database() as (database_url, broker_url):
        booster, client = setup(database_url, broker_url)
        import numpy as np

        from apps.reviews.services import explanations as services

        # Warm: the explainer is built once per process and model version.
        services.review_items_explain(item_ids=ingest(client, booster, "warm", 10))
        ids = ingest(client, booster, "rows", args.rows)
        X = np.random.default_rng(0).normal(size=(args.rows, explanations.N_FEATURES))
        began = time.perf_counter()
        booster.predict(X, pred_contrib=True)
        native = time.perf_counter() - began

        batches = [ids[i : i + args.batch] for i in range(0, len(ids), args.batch)]
        if args.cprofile:
            import cProfile
            import pstats

            profile = cProfile.Profile()
            profile.enable()
            for batch in batches:
                services.review_items_explain(item_ids=batch)
            profile.disable()
            pstats.Stats(profile).sort_stats(
                os.environ.get("PROFILE_SORT", "cumulative")
            ).print_stats(45)
            return 0
        began, began_cpu = time.perf_counter(), time.process_time()
        for batch in batches:
            failed, error = services.review_items_explain(item_ids=batch)
            assert not failed, error
        wall, cpu = time.perf_counter() - began, time.process_time() - began_cpu
        n = len(ids)
        print(f"\n{n} rows in batches of {args.batch}:")
        print(
            f"  LightGBM pred_contrib: {native / n * 1e6:.0f} us per row ({n / native:.0f} rows/s)"
        )
        print(
            f"  the worker's task body: {wall / n * 1e6:.0f} us per row ({n / wall:.0f} rows/s), "
            f"CPU {cpu / n * 1e6:.0f} us per row"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
