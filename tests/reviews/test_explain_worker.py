"""The explanation step through a real Celery worker process on the real Redis broker."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection

from apps.reviews.models import ItemStatus, ReviewItem
from apps.reviews.tasks import explain_items
from reviewqueue.celery import app as celery_app
from tests.conftest import make_client, model_spec, prediction_body

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def use_broker(url: str, *, eager: bool) -> None:
    """Point the Celery app at another broker. Its connection and producer pools were
    built for the old one (an eager run acquires a producer too), so drop both."""
    celery_app.conf.update(broker_url=url, task_always_eager=eager)
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.fixture
def broker():
    """Route task messages to the test Redis database instead of running them inline."""
    url = settings.TEST_REDIS_URL
    redis.Redis.from_url(url).flushdb()
    saved = (celery_app.conf.broker_url, celery_app.conf.task_always_eager)
    use_broker(url, eager=False)
    yield url
    use_broker(saved[0], eager=saved[1])
    redis.Redis.from_url(url).flushdb()


@pytest.fixture
def worker(broker, transactional_db):
    """A worker started as a deployment starts it: no -Q, so it must consume every queue."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "reviewqueue.settings.local",
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": broker,
    }
    process = subprocess.Popen(
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
    )
    yield process
    process.terminate()
    process.wait(timeout=30)


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.django_db(transaction=True)
def test_routed_items_become_claimable_through_the_worker(worker):
    # given a registered model and a producer
    admin = make_client("admin", "admin")
    assert admin.post("/api/v1/models/", model_spec(), format="json").status_code == 201
    producer = make_client("producer", "producer")
    # when a batch with routed predictions commits
    items = [
        prediction_body(f"w-{i}", context={"amount": 20000 if i % 2 else 1}) for i in range(20)
    ]
    r = producer.post("/api/v1/predictions/", {"items": items}, format="json")
    assert r.json()["created"] == 20
    # then the message reaches the worker over Redis and the items become ready
    assert ReviewItem.objects.count() == 10
    assert wait_for(lambda: not ReviewItem.objects.exclude(status=ItemStatus.READY).exists())


@pytest.mark.django_db
def test_the_task_is_idempotent_when_delivered_twice(producer_client, registered_model):
    # given a routed item still waiting
    r = producer_client.post(
        "/api/v1/predictions/", prediction_body(context={"amount": 20000}), format="json"
    )
    item_id = r.json()["review_item"]
    # when the task runs twice (a redelivery)
    explain_items.run(item_ids=[item_id])
    explain_items.run(item_ids=[item_id])
    # then the item is ready once, and an item that moved on is left alone
    assert ReviewItem.objects.get(id=item_id).status == ItemStatus.READY
    ReviewItem.objects.filter(id=item_id).update(status=ItemStatus.ESCALATED)
    explain_items.run(item_ids=[item_id, 10**9])
    assert ReviewItem.objects.get(id=item_id).status == ItemStatus.ESCALATED


@pytest.mark.django_db(transaction=True)
def test_intake_succeeds_with_the_broker_down(broker):
    # given a broker nobody listens on
    use_broker("redis://127.0.0.1:1/0", eager=False)
    admin = make_client("admin", "admin")
    admin.post("/api/v1/models/", model_spec(), format="json")
    producer = make_client("producer", "producer")
    # when a routed prediction arrives
    r = producer.post(
        "/api/v1/predictions/", prediction_body(context={"amount": 20000}), format="json"
    )
    # then intake still answers, and the item waits in PostgreSQL for a later sweep
    assert r.status_code == 201
    assert ReviewItem.objects.get().status == ItemStatus.PENDING
