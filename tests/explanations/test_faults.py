"""Faults around the explanation pipeline, with real worker processes and a Redis of
the test's own: a worker killed mid-batch, and a broker outage during intake.
PostgreSQL is the source of truth: the sweeper re-sends whatever is still waiting."""

import base64

import numpy as np
import pytest
from django.db.models import Count

from apps.explanations.models import Explanation
from apps.reviews.models import ExplanationStatus, ItemStatus, ReviewItem
from apps.reviews.tasks import sweep_explanations
from tests.factories import lightgbm_booster, make_client
from tests.workers import start_worker, stop_worker, use_broker, wait_until, worker

N_FEATURES = 50


@pytest.fixture
def private_redis(private_redis, settings):
    """The shared private Redis; explanation work is re-sent at once."""
    settings.REVIEW_EXPLANATION_GRACE_SECONDS = 0
    return private_redis


def register_heavy_model():
    """A 150-tree LightGBM on 50 features: a batch of 500 rows takes a noticeable time."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(2000, N_FEATURES))
    y = (X[:, :5].sum(axis=1) + rng.normal(size=2000) > 0).astype(int)
    booster = lightgbm_booster(X, y, n_trees=150, num_leaves=31, seed=3)
    spec = {
        "name": "heavy",
        "version": "1",
        "task": "binary_classification",
        "labels": ["no", "yes"],
        "features": [{"name": f"f{i}", "type": "numeric"} for i in range(N_FEATURES)],
        "explainer": {"kind": "lightgbm"},
        "routing": {"min_confidence": 1.0},
        "artifact": base64.b64encode(booster.model_to_string().encode()).decode(),
    }
    admin = make_client("admin", "admin")
    assert admin.post("/api/v1/models/", spec, format="json").status_code == 201
    return booster


def send(producer, booster, start: int, n: int) -> None:
    rng = np.random.default_rng(start)
    X = rng.normal(size=(n, N_FEATURES))
    p = booster.predict(X)
    items = [
        {
            "model": "heavy:1",
            "external_id": f"h-{start + i}",
            "features": {f"f{j}": float(X[i, j]) for j in range(N_FEATURES)},
            "prediction": {
                "label": "yes" if p[i] >= 0.5 else "no",
                "probabilities": {"no": float(1 - p[i]), "yes": float(p[i])},
            },
        }
        for i in range(n)
    ]
    r = producer.post("/api/v1/predictions/", {"items": items}, format="json")
    assert r.status_code == 200
    assert r.json()["created"] == n


def every_item_explained_once(total: int) -> bool:
    return (
        ReviewItem.objects.filter(
            status=ItemStatus.READY, explanation_status=ExplanationStatus.READY
        ).count()
        == total
    )


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_batch_loses_nothing(private_redis):
    # given 2,000 routed items whose explanation work (4 batches) waits in Redis
    booster = register_heavy_model()
    producer = make_client("producer", "producer")
    for start in (0, 1000):
        send(producer, booster, start, 1000)
    total = ReviewItem.objects.count()
    assert total == 2000
    # when a worker takes the first batch and is killed with SIGKILL while working
    first = start_worker(private_redis.url)
    assert wait_until(
        lambda: (
            ReviewItem.objects.filter(explanation_status=ExplanationStatus.READY).exists()
            or _queue_shorter(private_redis, 4)
        ),
        timeout=60,
    )
    stop_worker(first, kill=True)
    explained_at_kill = Explanation.objects.count()
    assert explained_at_kill < total
    # and a new worker starts while the sweeper re-sends what is still waiting
    with worker(private_redis.url):
        sweep_explanations.run()
        assert wait_until(lambda: every_item_explained_once(total), timeout=120)
    # then every item is explained exactly once
    assert Explanation.objects.count() == total
    assert not (
        Explanation.objects.values("prediction_id").annotate(n=Count("id")).filter(n__gt=1)
    ).exists()


def _queue_shorter(redis_server, published: int) -> bool:
    import redis

    return redis.Redis.from_url(redis_server.url).llen("explanations") < published


@pytest.mark.django_db(transaction=True)
def test_a_redis_outage_during_intake_is_recovered_by_the_sweeper(private_redis):
    # given the broker is down
    booster = register_heavy_model()
    producer = make_client("producer", "producer")
    private_redis.stop()
    # when predictions arrive, intake still answers and the items wait in PostgreSQL
    send(producer, booster, 0, 300)
    assert ReviewItem.objects.filter(status=ItemStatus.PENDING).count() == 300
    # and when Redis is back, a worker runs and the sweeper re-sends the work
    private_redis.start()
    use_broker(private_redis.url, eager=False)
    with worker(private_redis.url):
        sweep_explanations.run()
        # then every item is explained, once
        assert wait_until(lambda: every_item_explained_once(300), timeout=120)
    assert Explanation.objects.count() == 300
