"""Deliveries through a real Celery worker on Redis, and with the broker down."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from apps.webhooks.models import DeliveryStatus, WebhookDelivery
from apps.webhooks.tasks import sweep
from reviewqueue.celery import app as celery_app
from tests.factories import make_client, model_spec, prediction_body, subscribe
from tests.helpers import verify
from tests.workers import use_broker, wait_until, worker


def one_claimed_item():
    """A registered model, one routed item (explained in-process), a reviewer holding it."""
    admin = make_client("admin", "admin")
    assert admin.post("/api/v1/models/", model_spec(), format="json").status_code == 201
    producer = make_client("producer", "producer")
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True  # the explanation step is not under test
    try:
        r = producer.post(
            "/api/v1/predictions/", prediction_body(context={"amount": 20000}), format="json"
        )
    finally:
        celery_app.conf.task_always_eager = eager
    assert r.status_code == 201, r.content
    reviewer = make_client("rev", "reviewer")
    item = reviewer.post("/api/v1/queue/claim/").json()
    return reviewer, item


@pytest.mark.django_db(transaction=True)
def test_a_worker_delivers_the_decision(broker, receiver, allow_loopback):
    # given a subscription, a worker as a deployment runs it (allowing this loopback
    # receiver), and a claimed item
    _, secret = subscribe(receiver.url, "prediction.decided")
    reviewer, item = one_claimed_item()
    with worker(broker, WEBHOOK_ALLOW_PRIVATE_ADDRESSES="1"):
        # when the reviewer decides it
        r = reviewer.post(
            f"/api/v1/reviews/{item['id']}/decide/",
            {"lease_token": item["lease"]["token"], "label": "approve"},
            format="json",
        )
        assert r.status_code == 200
        # then the worker delivers it, signed
        assert wait_until(
            lambda: WebhookDelivery.objects.filter(status=DeliveryStatus.DELIVERED).exists()
        )
    [request] = receiver.requests
    assert verify(secret, request)


@pytest.mark.django_db(transaction=True)
def test_nothing_is_lost_while_the_broker_is_down(broker, receiver, settings, caplog):
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = True
    subscribe(receiver.url, "prediction.decided")
    reviewer, item = one_claimed_item()
    # given a broker nobody listens on
    use_broker("redis://127.0.0.1:1/0", eager=False)
    # when a decision commits, it still answers 200, and its delivery waits
    with caplog.at_level("WARNING", logger="apps.core.enqueue"):
        r = reviewer.post(
            f"/api/v1/reviews/{item['id']}/decide/",
            {"lease_token": item["lease"]["token"], "label": "approve"},
            format="json",
        )
    assert r.status_code == 200
    # and one warning line says so
    [warning] = [rec for rec in caplog.records if rec.name == "apps.core.enqueue"]
    assert warning.getMessage().startswith("webhook deliveries: 1 messages not sent")
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 0
    assert receiver.requests == []
    # when the broker is back (in-process here), the sweeper leaves it alone for the
    # grace period, then sends it
    use_broker("", eager=True)
    sweep()
    assert receiver.requests == []
    later = timezone.now() + timedelta(seconds=settings.WEBHOOK_SWEEP_GRACE_SECONDS + 1)
    with time_machine.travel(later, tick=False):
        sweep()
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED
    assert len(receiver.requests) == 1
