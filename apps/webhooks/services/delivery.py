"""One attempt at a delivery: claim, signed HTTP request, outcome.

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
import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .. import outbound
from ..events import rfc3339
from ..models import DeliveryStatus, WebhookAttempt, WebhookDelivery
from .subscriptions import MAX_URL_LENGTH

logger = logging.getLogger(__name__)

MAX_ERROR_LENGTH = 2000
USER_AGENT = "reviewqueue-webhooks/1"


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
