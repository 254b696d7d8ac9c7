"""Webhook deliveries to a real HTTP receiver on loopback: the outbox, the signature,
retries with backoff and the delivery log, refusals, and idempotence."""

import json
from datetime import timedelta

import pytest
import time_machine
from django.db import transaction
from django.utils import timezone

from apps.registry.models import ReasonCode
from apps.reviews.models import Decision, Escalation, ItemStatus, ReviewItem
from apps.reviews.services.escalations import review_items_escalate_sla_breaches
from apps.reviews.services.leases import review_items_expire_leases
from apps.reviews.services.webhook_events import (
    webhooks_items_escalated,
    webhooks_prediction_decided,
)
from apps.webhooks.models import WebhookAttempt, WebhookDelivery
from apps.webhooks.services.delivery import webhook_delivery_attempt
from apps.webhooks.tasks import deliver, sweep
from tests.factories import make_client, subscribe
from tests.helpers import run_in_threads, verify

pytestmark = pytest.mark.django_db


def body_of(request) -> dict:
    return json.loads(request.body)


def test_a_decision_is_delivered_signed(allow_loopback, receiver, routed_items, decide):
    # given a subscription to prediction.decided at a receiver on loopback
    _, secret = subscribe(receiver.url, "prediction.decided")
    routed_items(1)
    # when a reviewer decides an item
    item = decide("approve")
    # then the receiver got one POST whose signature verifies with the secret
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert verify(secret, request)
    assert not verify("another-secret", request)
    delivery = WebhookDelivery.objects.get()
    assert request.headers["X-Reviewqueue-Delivery"] == str(delivery.delivery_id)
    assert request.headers["X-Reviewqueue-Event"] == "prediction.decided"
    assert request.headers["Content-Type"] == "application/json"
    assert abs(int(request.headers["X-Reviewqueue-Timestamp"]) - timezone.now().timestamp()) < 60
    # and the body carries the decision, without any feature value
    body = body_of(request)
    assert body["id"] == str(delivery.delivery_id) and body["event"] == "prediction.decided"
    data = body["data"]
    assert data["prediction_id"] == item["prediction"]["id"]
    assert data["external_id"] == "item-0"
    assert data["model"] == "credit-default:3"
    assert (data["label"], data["source"], data["overridden"]) == ("approve", "reviewer", False)
    assert data["reason_code"] is None
    assert data["decided_at"].endswith("Z")
    assert "features" not in request.body.decode() and "52000" not in request.body.decode()
    # and the log shows one successful attempt
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)
    [attempt] = WebhookAttempt.objects.filter(delivery=delivery)
    assert (attempt.number, attempt.status_code, attempt.error) == (1, 200, "")
    assert attempt.duration_ms > 0


def test_an_override_carries_its_reason_code(allow_loopback, receiver, routed_items, decide):
    ReasonCode.objects.create(model_name="credit-default", code="policy", description="p")
    subscribe(receiver.url, "prediction.decided")
    routed_items(1)
    decide("deny", reason_code="policy")
    data = body_of(receiver.requests[0])["data"]
    assert (data["label"], data["overridden"], data["reason_code"]) == ("deny", True, "policy")


def test_each_subscription_gets_its_own_delivery(allow_loopback, receiver, routed_items, decide):
    # given two subscriptions to the event, one to another event, one inactive
    _, first = subscribe(receiver.url, "prediction.decided")
    _, second = subscribe(receiver.url + "/2", "prediction.decided", "item.escalated")
    subscribe(receiver.url + "/3", "item.escalated")
    off, _ = subscribe(receiver.url + "/4", "prediction.decided")
    off.active = False
    off.save()
    routed_items(1)
    decide()
    # then each of the two gets one request signed with its own secret
    by_path = {r.path: r for r in receiver.requests}
    assert set(by_path) == {"/hooks/reviewqueue", "/hooks/reviewqueue/2"}
    assert verify(first, by_path["/hooks/reviewqueue"])
    assert verify(second, by_path["/hooks/reviewqueue/2"])
    assert not verify(first, by_path["/hooks/reviewqueue/2"])


def test_escalations_by_a_reviewer_and_their_resolution_are_delivered(
    allow_loopback, receiver, routed_items, reviewer, django_capture_on_commit_callbacks
):
    subscribe(receiver.url, "prediction.decided", "item.escalated")
    [item_id] = routed_items(1)
    item = reviewer.post("/api/v1/queue/claim/").json()
    # when the reviewer escalates it
    with django_capture_on_commit_callbacks(execute=True):
        r = reviewer.post(
            f"/api/v1/reviews/{item_id}/escalate/",
            {"lease_token": item["lease"]["token"], "reason": "unclear_case"},
            format="json",
        )
    assert r.status_code == 200
    # then item.escalated arrives
    [request] = receiver.requests
    assert request.headers["X-Reviewqueue-Event"] == "item.escalated"
    data = body_of(request)["data"]
    escalation = Escalation.objects.get()
    assert data == {
        "escalation_id": escalation.id,
        "item_id": item_id,
        "prediction_id": item["prediction"]["id"],
        "external_id": "item-0",
        "model": "credit-default:3",
        "reason": "unclear_case",
        "escalated_at": data["escalated_at"],
    }
    # when a manager resolves it, prediction.decided arrives with source escalation
    manager = make_client("mgr", "escalation_manager")
    manager.post(f"/api/v1/escalations/{escalation.id}/claim/")
    with django_capture_on_commit_callbacks(execute=True):
        r = manager.post(
            f"/api/v1/escalations/{escalation.id}/resolve/", {"label": "deny"}, format="json"
        )
    assert r.status_code == 200, r.content
    decided = body_of(receiver.requests[1])
    assert decided["event"] == "prediction.decided"
    assert (decided["data"]["source"], decided["data"]["label"]) == ("escalation", "deny")


def test_automatic_escalations_are_delivered(
    allow_loopback, receiver, routed_items, settings, django_capture_on_commit_callbacks
):
    # given three items: two past their SLA, one abandoned once too often
    subscribe(receiver.url, "item.escalated")
    ids = routed_items(3)
    now = timezone.now()
    ReviewItem.objects.filter(id__in=ids[:2]).update(due_at=now - timedelta(minutes=5))
    holder = make_client("holder", "reviewer").user
    ReviewItem.objects.filter(id=ids[2]).update(
        status=ItemStatus.LEASED,
        leased_by=holder,
        lease_token="6b1c4a52-1111-4222-8333-444455556666",
        lease_expires_at=now - timedelta(seconds=1),
        lease_expiries=settings.REVIEW_MAX_LEASE_EXPIRIES - 1,
        due_at=now + timedelta(hours=1),
    )
    # when the periodic steps run
    with django_capture_on_commit_callbacks(execute=True):
        assert review_items_escalate_sla_breaches(now=now) == 2
    with django_capture_on_commit_callbacks(execute=True):
        assert review_items_expire_leases(now=now) == 1
    # then one item.escalated per item, with the system's reasons
    reasons = sorted(
        (body_of(r)["data"]["item_id"], body_of(r)["data"]["reason"]) for r in receiver.requests
    )
    assert reasons == [
        (ids[0], "sla_breach"),
        (ids[1], "sla_breach"),
        (ids[2], "repeated_abandonment"),
    ]


def test_a_failing_receiver_gets_retries_with_backoff(
    allow_loopback, receiver, routed_items, decide, settings
):
    settings.WEBHOOK_BACKOFF_BASE_SECONDS = 10
    settings.WEBHOOK_BACKOFF_MAX_SECONDS = 3600
    # given a receiver that fails twice, then accepts
    receiver.statuses = [500, 503]
    _, secret = subscribe(receiver.url, "prediction.decided")
    routed_items(1)
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        # when the decision is delivered, the first attempt fails
        decide()
        delivery = WebhookDelivery.objects.get()
        assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
            "pending",
            1,
            500,
        )
        first_wait = (delivery.next_attempt_at - start).total_seconds()
        assert 10 <= first_wait < 11
        # and before the backoff passes, the sweeper and a stray message send nothing
        clock.shift(5)
        sweep()
        deliver(delivery_id=delivery.id)
        assert len(receiver.requests) == 1
        # when the backoff has passed, the sweeper sends the retry: it fails again, and
        # the next wait is twice as long
        clock.shift(6)
        sweep()
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
            "pending",
            2,
            503,
        )
        second_wait = (delivery.next_attempt_at - timezone.now()).total_seconds()
        assert 20 <= second_wait < 21
        clock.shift(21)
        sweep()
    # then the third attempt is delivered, and the log shows all three
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 3)
    attempts = list(WebhookAttempt.objects.filter(delivery=delivery).order_by("number"))
    assert [(a.number, a.status_code) for a in attempts] == [(1, 500), (2, 503), (3, 200)]
    assert [a.error for a in attempts] == [
        "the receiver answered HTTP 500",
        "the receiver answered HTTP 503",
        "",
    ]
    assert all(a.duration_ms > 0 for a in attempts)
    # and every request carried the same delivery id and body, each signed anew
    assert len({r.headers["X-Reviewqueue-Delivery"] for r in receiver.requests}) == 1
    assert len({r.body for r in receiver.requests}) == 1
    assert all(verify(secret, r) for r in receiver.requests)


def test_a_delivery_fails_after_the_last_attempt(
    allow_loopback, receiver, routed_items, decide, settings
):
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    settings.WEBHOOK_BACKOFF_BASE_SECONDS = 10
    settings.WEBHOOK_BACKOFF_MAX_SECONDS = 15
    receiver.statuses = [500] * 10
    subscribe(receiver.url, "prediction.decided")
    routed_items(1)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        decide()
        delivery = WebhookDelivery.objects.get()
        waits = []
        for _ in range(2):
            waits.append((delivery.next_attempt_at - timezone.now()).total_seconds())
            clock.shift(waits[-1] + 0.01)
            sweep()
            delivery.refresh_from_db()
        clock.shift(3600)
        sweep()
    # the waits double up to the cap, and the third failure is final
    assert [round(w) for w in waits] == [10, 15]
    assert (delivery.status, delivery.attempts) == ("failed", 3)
    assert delivery.finished_at is not None
    assert len(receiver.requests) == 3
    assert WebhookAttempt.objects.filter(delivery=delivery).count() == 3


def test_a_private_receiver_is_refused_at_delivery_by_default(
    allow_loopback, receiver, routed_items, decide, settings
):
    # given a subscription made while private addresses were allowed
    subscribe(receiver.url, "prediction.decided")
    routed_items(1)
    # when the setting is back to its default and a decision is delivered
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False
    decide()
    # then nothing is sent, and the delivery fails at once (a refusal is not retried)
    assert receiver.requests == []
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert "refused" in delivery.last_error and "non-public" in delivery.last_error
    [attempt] = WebhookAttempt.objects.filter(delivery=delivery)
    assert attempt.status_code is None and "loopback" in attempt.error


def test_a_delivery_task_run_twice_sends_once(allow_loopback, receiver, routed_items, decide):
    subscribe(receiver.url, "prediction.decided")
    routed_items(1)
    decide()
    delivery = WebhookDelivery.objects.get()
    # when the task runs again, twice (a redelivered message, the sweeper)
    deliver(delivery_id=delivery.id)
    deliver(delivery_id=delivery.id)
    sweep()
    deliver(delivery_id=10**12)
    # then it was sent once
    assert len(receiver.requests) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 1)


@pytest.mark.django_db(transaction=True)
def test_concurrent_attempts_send_once(allow_loopback, receiver):
    # given a pending delivery and a slow receiver
    receiver.delay = 0.5
    sub, _ = subscribe(receiver.url, "prediction.decided")
    now = timezone.now()
    delivery = WebhookDelivery.objects.create(
        subscription=sub,
        event="prediction.decided",
        payload={"prediction_id": 1},
        next_attempt_at=now,
        created_at=now,
    )
    # when four workers attempt it at once
    results = run_in_threads(lambda: webhook_delivery_attempt(delivery_id=delivery.id), [()] * 4)
    # then one sent it, the others found it taken
    assert sorted(results, key=str) == [None, None, None, "delivered"]
    assert len(receiver.requests) == 1


def test_a_rolled_back_change_queues_nothing(allow_loopback, receiver, routed_items, reviewer):
    subscribe(receiver.url, "prediction.decided", "item.escalated")
    [item_id] = routed_items(1)
    # when the transaction that would record an escalation rolls back
    with pytest.raises(RuntimeError), transaction.atomic():
        Escalation.objects.create(item_id=item_id, reason="x", raised_at=timezone.now())
        webhooks_items_escalated(item_ids=[item_id], at=Escalation.objects.get().raised_at)
        assert WebhookDelivery.objects.count() == 1
        raise RuntimeError("rolled back")
    # then no delivery is left and nothing is sent
    assert not WebhookDelivery.objects.exists()
    assert receiver.requests == []
    # and a refused decision (lost lease) queues nothing either
    r = reviewer.post(
        f"/api/v1/reviews/{item_id}/decide/",
        {"lease_token": "6b1c4a52-1111-4222-8333-444455556666", "label": "approve"},
        format="json",
    )
    assert r.status_code == 409
    assert not WebhookDelivery.objects.exists()


def test_the_outbox_costs_one_query_without_subscriptions(
    allow_loopback, receiver, routed_items, django_assert_num_queries
):
    [item_id] = routed_items(1)
    now = timezone.now()
    item = ReviewItem.objects.select_related("prediction__model_version").get(id=item_id)
    decision = Decision(id=1, item=item, label="approve", source="reviewer", decided_at=now)
    with transaction.atomic():
        Escalation.objects.create(item_id=item_id, reason="x", raised_at=now)
        # no subscription: one small query each, nothing inserted
        with django_assert_num_queries(1):
            webhooks_prediction_decided(decision=decision)
        with django_assert_num_queries(1):
            webhooks_items_escalated(item_ids=[item_id], at=now)
        with django_assert_num_queries(0):
            webhooks_items_escalated(item_ids=[], at=now)
        # with subscriptions: one more query for the decision (the insert), two for
        # escalations (their rows, the insert), whatever the number of subscriptions
        subscribe(receiver.url, "prediction.decided", "item.escalated")
        subscribe(receiver.url, "prediction.decided", "item.escalated")
        with django_assert_num_queries(2):
            webhooks_prediction_decided(decision=decision)
        with django_assert_num_queries(3):
            webhooks_items_escalated(item_ids=[item_id], at=now)
        assert WebhookDelivery.objects.count() == 4
        transaction.set_rollback(True)
