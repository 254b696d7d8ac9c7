"""The explanation step through a real Celery worker process on the real Redis broker."""

import pytest

from apps.reviews.models import ExplanationStatus, ItemStatus, ReviewItem
from apps.reviews.tasks import explain_items
from tests.factories import make_client, model_spec, prediction_body
from tests.workers import use_broker, wait_until, worker


@pytest.mark.django_db(transaction=True)
def test_routed_items_become_claimable_through_the_worker(broker):
    # given a registered model, a producer and a worker as a deployment runs it
    admin = make_client("admin", "admin")
    assert admin.post("/api/v1/models/", model_spec(), format="json").status_code == 201
    producer = make_client("producer", "producer")
    with worker(broker):
        # when a batch with routed predictions commits
        items = [
            prediction_body(f"w-{i}", context={"amount": 20000 if i % 2 else 1}) for i in range(20)
        ]
        r = producer.post("/api/v1/predictions/", {"items": items}, format="json")
        assert r.json()["created"] == 20
        # then the message reaches the worker over Redis and the items become ready
        assert ReviewItem.objects.count() == 10
        assert wait_until(lambda: not ReviewItem.objects.exclude(status=ItemStatus.READY).exists())
    assert set(ReviewItem.objects.values_list("explanation_status", flat=True)) == {
        ExplanationStatus.READY
    }


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
