"""The outbox: deliveries written in the transaction of the change they report.

``webhook_events_queue`` runs inside the transaction that records a decision or an
escalation and inserts one delivery per active subscription to the event and per
event (one multi-row INSERT; with no subscription, one small query and nothing else).
After commit a Celery message is sent per delivery. A lost message (Redis down, a
worker killed) delays a delivery, never loses it: the sweeper re-sends deliveries
that are due and were not acted on within ``WEBHOOK_SWEEP_GRACE_SECONDS``, and
retries after a failure are sent by it too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q

from apps.core.enqueue import enqueue, enqueue_on_commit

from ..events import ItemEscalated, PredictionDecided
from ..models import DeliveryStatus, WebhookDelivery
from ..selectors import webhook_subscriptions_for_event

DELIVER_TASK = "webhooks.deliver"

E = TypeVar("E", PredictionDecided, ItemEscalated)


def webhook_events_queue(*, kind: type[E], events: Callable[[], Sequence[E]], at: datetime) -> None:
    """Queue a delivery of each event of ``kind`` to every active subscriber, in the
    caller's transaction (the one recording the change), dated ``at``.

    ``events`` is called only when someone subscribes to ``kind``: an event nobody
    wants costs one query, however the caller builds it.
    """
    subscription_ids = webhook_subscriptions_for_event(event=kind.EVENT)
    if not subscription_ids:
        return
    payloads = [event.payload() for event in events()]
    if not connection.in_atomic_block:
        raise RuntimeError("webhook deliveries must be queued inside the change's transaction")
    created = WebhookDelivery.objects.bulk_create(
        [
            WebhookDelivery(
                subscription_id=subscription_id,
                event=kind.EVENT,
                payload=payload,
                next_attempt_at=at,
                enqueued_at=at,
                created_at=at,
            )
            for payload in payloads
            for subscription_id in subscription_ids
        ]
    )
    enqueue_on_commit(DELIVER_TASK, _messages([d.id for d in created]), what="webhook deliveries")


def webhook_deliveries_enqueue(*, delivery_ids: Sequence[int]) -> None:
    """Send a Celery message per delivery now. A broker outage is logged once: the
    deliveries wait in PostgreSQL and the sweeper sends them."""
    enqueue(DELIVER_TASK, _messages(delivery_ids), what="webhook deliveries")


def _messages(delivery_ids: Sequence[int]) -> list[dict[str, int]]:
    return [{"delivery_id": delivery_id} for delivery_id in delivery_ids]


def webhook_deliveries_due_for_sweep(*, now: datetime, limit: int) -> list[int]:
    """Pending deliveries due now whose last message is older than the grace period (or
    that have none: a retry); marks them sent, so the next sweep leaves them alone for a
    grace period. Skips rows another transaction holds."""
    cutoff = now - timedelta(seconds=settings.WEBHOOK_SWEEP_GRACE_SECONDS)
    with transaction.atomic():
        ids = list(
            WebhookDelivery.objects.select_for_update(skip_locked=True)
            .filter(
                Q(enqueued_at__isnull=True) | Q(enqueued_at__lte=cutoff),
                Q(locked_until__isnull=True) | Q(locked_until__lte=now),
                status=DeliveryStatus.PENDING,
                next_attempt_at__lte=now,
            )
            .order_by("next_attempt_at", "id")
            .values_list("id", flat=True)[:limit]
        )
        WebhookDelivery.objects.filter(id__in=ids).update(enqueued_at=now)
    return ids
