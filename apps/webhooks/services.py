"""Webhooks: subscriptions, the outbox, and delivery attempts.

The outbox: ``webhooks_prediction_decided`` and ``webhooks_items_escalated`` run inside
the transaction that records the decision or escalation, and insert one delivery per
active subscription to the event (one multi-row INSERT; with no subscription, one
small query and nothing else). After commit a Celery message is sent per delivery. A
lost message (Redis down, a worker killed) delays a delivery, never loses it: the
sweeper re-sends deliveries that are due and were not acted on within
``WEBHOOK_SWEEP_GRACE_SECONDS``, and retries after a failure are sent by it too.

An attempt (``webhook_delivery_attempt``) claims the delivery in one short transaction
(``FOR UPDATE SKIP LOCKED``, then ``attempts + 1`` and ``locked_until``), sends with no
transaction open, and records the outcome in a second short transaction, guarded on
``status = 'pending'`` and the claimed attempt number. A delivery already delivered,
failed, in flight or not yet due is not sent. Receivers may still see a delivery twice
(a worker dying after the send and before the record): they dedupe on
``X-Reviewqueue-Delivery``.
"""

from __future__ import annotations

import http.client
import json
import logging
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from apps.core.exceptions import ValidationFailed
from apps.reviews.models import Decision, Escalation

from . import outbound
from .models import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEvent,
    WebhookSubscription,
)
from .selectors import webhook_subscriptions_for_event

logger = logging.getLogger(__name__)

MAX_URL_LENGTH = 2000
MAX_NAME_LENGTH = 100
MAX_ERROR_LENGTH = 2000
USER_AGENT = "reviewqueue-webhooks/1"


def rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


# Subscriptions (admin-managed).


def webhook_url_check(*, url: object) -> str:
    """The URL, if the address guard lets it through now; ValidationFailed otherwise."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise ValidationFailed(
            "Bad webhook URL.", details={"url": f"must be a URL of at most {MAX_URL_LENGTH} chars"}
        )
    try:
        outbound.check_url(url, allow_private=settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES)
    except outbound.AddressRefused as exc:
        raise ValidationFailed(
            "The webhook URL is refused.", code="webhook_url_refused", details={"url": str(exc)}
        ) from None
    return url


def webhook_events_check(*, events: object) -> list[str]:
    """The event names, deduplicated in a stable order; ValidationFailed if unknown."""
    if (
        not isinstance(events, list | tuple)
        or not events
        or not all(isinstance(e, str) and e in WebhookEvent.values for e in events)
    ):
        raise ValidationFailed(
            "Bad webhook events.",
            details={"events": f"must be a non-empty list drawn from {WebhookEvent.values!r}"},
        )
    return [e for e in WebhookEvent.values if e in events]


def _name_check(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
        raise ValidationFailed(
            "Bad name.", details={"name": f"must be text of 1 to {MAX_NAME_LENGTH} characters"}
        )
    return name.strip()


def webhook_subscription_create(
    *, name: object, url: object, events: object, active: bool = True, created_by=None
) -> tuple[WebhookSubscription, str]:
    """Create a subscription with a generated secret; the subscription and the secret
    (to show once). The URL must pass the address guard."""
    subscription = WebhookSubscription.objects.create(
        name=_name_check(name),
        url=webhook_url_check(url=url),
        events=webhook_events_check(events=events),
        active=bool(active),
        secret=secrets.token_urlsafe(32),
        created_by=created_by,
    )
    return subscription, subscription.secret


def webhook_subscription_update(
    *, subscription: WebhookSubscription, name: object, url: object, events: object, active: bool
) -> WebhookSubscription:
    """Change a subscription's name, URL, events or active flag (not its secret).
    Deliveries already queued keep going to the subscription's URL at send time."""
    subscription.name = _name_check(name)
    subscription.url = webhook_url_check(url=url)
    subscription.events = webhook_events_check(events=events)
    subscription.active = bool(active)
    subscription.save(update_fields=["name", "url", "events", "active", "updated_at"])
    return subscription


def webhook_subscription_rotate_secret(*, subscription: WebhookSubscription) -> str:
    """Replace the secret; the new one, to show once. Attempts from now on use it."""
    subscription.secret = secrets.token_urlsafe(32)
    subscription.save(update_fields=["secret", "updated_at"])
    return subscription.secret


# The outbox: called inside the transaction of the change they report.


def webhooks_prediction_decided(*, decision: Decision) -> None:
    """Queue ``prediction.decided`` for a final human decision, in the caller's
    transaction. Reads the item, prediction and model version the caller loaded."""
    subscription_ids = webhook_subscriptions_for_event(event=WebhookEvent.PREDICTION_DECIDED)
    if not subscription_ids:
        return
    prediction = decision.item.prediction
    payload = {
        "decision_id": decision.id,
        "item_id": decision.item_id,
        "prediction_id": prediction.id,
        "external_id": prediction.external_id,
        "model": prediction.model_version.ref,
        "model_label": prediction.label,
        "label": decision.label,
        "source": decision.source,
        "overridden": decision.overridden,
        "reason_code": decision.reason_code or None,
        "decided_at": rfc3339(decision.decided_at),
    }
    _outbox_insert(
        event=WebhookEvent.PREDICTION_DECIDED,
        subscription_ids=subscription_ids,
        payloads=[payload],
        now=decision.decided_at,
    )


def webhooks_items_escalated(*, item_ids: Sequence[int], at: datetime) -> None:
    """Queue ``item.escalated`` for the escalations raised on ``item_ids`` at ``at``, in
    the caller's transaction (which inserted them)."""
    if not item_ids:
        return
    subscription_ids = webhook_subscriptions_for_event(event=WebhookEvent.ITEM_ESCALATED)
    if not subscription_ids:
        return
    rows = (
        Escalation.objects.filter(item_id__in=list(item_ids), raised_at=at)
        .order_by("id")
        .values(
            "id",
            "reason",
            "raised_at",
            "item_id",
            "item__prediction_id",
            "item__prediction__external_id",
            "item__prediction__model_version__name",
            "item__prediction__model_version__version",
        )
    )
    payloads = [
        {
            "escalation_id": r["id"],
            "item_id": r["item_id"],
            "prediction_id": r["item__prediction_id"],
            "external_id": r["item__prediction__external_id"],
            "model": f"{r['item__prediction__model_version__name']}:"
            f"{r['item__prediction__model_version__version']}",
            "reason": r["reason"],
            "escalated_at": rfc3339(r["raised_at"]),
        }
        for r in rows
    ]
    _outbox_insert(
        event=WebhookEvent.ITEM_ESCALATED,
        subscription_ids=subscription_ids,
        payloads=payloads,
        now=at,
    )


def _outbox_insert(
    *, event: str, subscription_ids: list[int], payloads: list[dict[str, Any]], now: datetime
) -> None:
    """One multi-row INSERT of a delivery per subscription and payload; their messages
    are sent after commit."""
    if not connection.in_atomic_block:
        raise RuntimeError("webhook deliveries must be queued inside the change's transaction")
    created = WebhookDelivery.objects.bulk_create(
        [
            WebhookDelivery(
                subscription_id=subscription_id,
                event=event,
                payload=payload,
                next_attempt_at=now,
                enqueued_at=now,
                created_at=now,
            )
            for payload in payloads
            for subscription_id in subscription_ids
        ]
    )
    ids = [d.id for d in created]
    if ids:
        transaction.on_commit(partial(webhook_deliveries_enqueue, delivery_ids=ids), robust=True)


def webhook_deliveries_enqueue(*, delivery_ids: Sequence[int]) -> None:
    """Send a Celery message per delivery (after commit). A broker outage is logged and
    ends the loop: the deliveries wait in PostgreSQL and the sweeper sends them."""
    from .tasks import deliver  # the tasks module imports this one

    for delivery_id in delivery_ids:
        try:
            deliver.delay(delivery_id=delivery_id)
        except Exception as exc:
            logger.warning("webhook deliveries not sent to the broker (%s); the sweeper will", exc)
            return


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


# Attempts.


def backoff_seconds(*, attempt: int) -> float:
    """The wait after failed attempt number ``attempt`` (1-based): doubling, capped."""
    base = settings.WEBHOOK_BACKOFF_BASE_SECONDS
    return float(min(settings.WEBHOOK_BACKOFF_MAX_SECONDS, base * 2 ** (attempt - 1)))


def _lock_seconds() -> float:
    """How long an attempt holds its delivery: longer than a slow attempt can take."""
    hops = settings.WEBHOOK_MAX_REDIRECTS + 1
    return hops * 3 * settings.WEBHOOK_TIMEOUT_SECONDS + 30


def delivery_body(delivery: WebhookDelivery) -> bytes:
    """The exact bytes sent (and signed): the same for every attempt."""
    envelope = {
        "id": str(delivery.delivery_id),
        "event": delivery.event,
        "created_at": rfc3339(delivery.created_at),
        "data": delivery.payload,
    }
    return json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode()


def delivery_headers(*, delivery: WebhookDelivery, secret: str, body: bytes, at: int) -> dict:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Reviewqueue-Event": delivery.event,
        "X-Reviewqueue-Delivery": str(delivery.delivery_id),
        "X-Reviewqueue-Timestamp": str(at),
        "X-Reviewqueue-Signature": outbound.sign(secret=secret, timestamp=at, body=body),
    }


def _claim(*, delivery_id: int, now: datetime) -> WebhookDelivery | None:
    """Take the delivery for one attempt, if it is pending, due and not in flight."""
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("subscription")
            .filter(
                Q(locked_until__isnull=True) | Q(locked_until__lte=now),
                id=delivery_id,
                status=DeliveryStatus.PENDING,
                next_attempt_at__lte=now,
            )
            .first()
        )
        if delivery is None:
            return None
        delivery.attempts += 1
        delivery.locked_until = now + timedelta(seconds=_lock_seconds())
        delivery.save(update_fields=["attempts", "locked_until"])
    return delivery


def webhook_delivery_attempt(*, delivery_id: int, now: datetime | None = None) -> str | None:
    """Make one attempt at a delivery; its status afterwards, or None when there was
    nothing to do (unknown, finished, in flight elsewhere, or not yet due).

    No transaction is open while the request is in flight.
    """
    now = now or timezone.now()
    delivery = _claim(delivery_id=delivery_id, now=now)
    if delivery is None:
        return None
    subscription = delivery.subscription
    if not subscription.active:
        return _finish(
            delivery=delivery,
            status=DeliveryStatus.FAILED,
            end=now,
            error="the subscription is inactive",
        )
    body = delivery_body(delivery)
    headers = delivery_headers(
        delivery=delivery, secret=subscription.secret, body=body, at=int(now.timestamp())
    )
    status_code: int | None = None
    final_url = subscription.url
    error = ""
    permanent = False
    started = time.monotonic()
    try:
        response = outbound.post(
            subscription.url,
            body=body,
            headers=headers,
            allow_private=settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES,
            timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
            max_redirects=settings.WEBHOOK_MAX_REDIRECTS,
        )
        status_code, final_url = response.status, response.url
        if not 200 <= status_code < 300:
            error = f"the receiver answered HTTP {status_code}"
    except outbound.AddressRefused as exc:
        # A host that does not resolve may come back; a refused address is policy.
        permanent = not isinstance(exc, outbound.HostUnresolvable)
        error = f"refused: {exc}"
    except (outbound.TooManyRedirects, OSError, http.client.HTTPException) as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    duration_ms = (time.monotonic() - started) * 1000
    if not error:
        status = DeliveryStatus.DELIVERED
    elif permanent or delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
        status = DeliveryStatus.FAILED
    else:
        status = DeliveryStatus.PENDING
    attempt = WebhookAttempt(
        delivery_id=delivery.id,
        number=delivery.attempts,
        started_at=now,
        duration_ms=duration_ms,
        url=final_url[:MAX_URL_LENGTH],
        status_code=status_code,
        error=error[:MAX_ERROR_LENGTH],
    )
    return _finish(
        delivery=delivery,
        status=status,
        end=now + timedelta(milliseconds=duration_ms),
        attempt=attempt,
    )


def _finish(
    *,
    delivery: WebhookDelivery,
    status: str,
    end: datetime,
    attempt: WebhookAttempt | None = None,
    error: str = "",
) -> str | None:
    """Log the attempt and record its outcome, in one transaction: delivered, failed,
    or pending until the backoff passes. Guarded on the claimed attempt number: a late
    worker whose claim lapsed and was taken over moves nothing (its attempt is still
    logged)."""
    if attempt is not None:
        error = attempt.error
    changes: dict[str, Any] = {
        "status": status,
        "locked_until": None,
        "last_status_code": attempt.status_code if attempt is not None else None,
        "last_error": error,
    }
    if status == DeliveryStatus.PENDING:
        changes["next_attempt_at"] = end + timedelta(
            seconds=backoff_seconds(attempt=delivery.attempts)
        )
        changes["enqueued_at"] = None  # the sweeper sends the retry once it is due
    else:
        changes["finished_at"] = end
    with transaction.atomic():
        if attempt is not None:
            attempt.save(force_insert=True)
        moved = WebhookDelivery.objects.filter(
            id=delivery.id, status=DeliveryStatus.PENDING, attempts=delivery.attempts
        ).update(**changes)
    if not moved:
        return None
    if status == DeliveryStatus.FAILED:
        logger.warning(
            "webhook delivery %s failed after %d attempts: %s",
            delivery.delivery_id,
            delivery.attempts,
            error,
        )
    return status
