"""Leases on review items: claim, heartbeat, release, and expiry.

The claim policy (docs/claim_policy.md):
- A claim leases the ready item of the caller's queues that is due first (then the
  riskiest, then the oldest), in one statement: ``SELECT ... ORDER BY ... LIMIT 1 FOR
  UPDATE SKIP LOCKED`` inside an ``UPDATE ... RETURNING``, served by the partial index
  ``reviewitem_claim_idx``. Concurrent claimers skip each other's rows, so no item is
  handed to two people.
- A lease is a random token and an expiry. Every later write presents the token and is
  a compare-and-set on (status, token, holder, expiry in the future); zero rows updated
  is a 409 that changed nothing.
- A caller who already holds a live lease gets that item back, lease renewed: a
  reviewer holds at most one item (a partial unique index says so).
- Expired leases return their items to the queue, at claim time and from a periodic
  task; the fifth expiry of one item escalates it (``repeated_abandonment``) instead.
Times come from the application clock (``timezone.now``), never the database's, so
tests control them.
"""

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from apps.audit.models import Action
from apps.audit.services import Event, audit_append
from apps.core.db import on_postgresql, sql_in
from apps.core.exceptions import Conflict, NotFound
from apps.queues.models import Queue
from apps.queues.scope import queue_scope
from apps.reviews.models import Escalation, EscalationStatus, ItemStatus, ReviewItem
from apps.reviews.selectors import review_item_for_output, review_item_visible_to
from apps.reviews.sql import claim_lock, claim_sql, item_join, settle_sql

from .webhook_events import webhooks_items_escalated

REPEATED_ABANDONMENT = "repeated_abandonment"
EXPIRY_BATCH = 500

# The lease columns of an item that no longer carries a lease.
CLEARED_LEASE = {"lease_token": None, "leased_by": None, "lease_expires_at": None}


def lease_lost(item_id: int) -> Conflict:
    return Conflict(
        f"The lease on item {item_id} is not yours or has expired; claim again.",
        code="lease_lost",
    )


def parse_token(token: object) -> uuid.UUID | None:
    """The lease token as a UUID; None when it cannot be one (so it matches nothing)."""
    try:
        return uuid.UUID(str(token))
    except ValueError:
        return None


def review_item_visible(*, user, item_id: int) -> ReviewItem:
    """The item, if it lies in the caller's queues; NotFound otherwise.

    With its prediction, model version, queue and explanation, in one statement.
    """
    item = review_item_visible_to(user=user, item_id=item_id)
    if item is None:
        raise NotFound(f"No review item {item_id}.", code="item_not_found")
    return item


def live_lease(*, user, item_id: int, token: object, now: datetime) -> Q:
    """The compare-and-set condition for a write under the caller's live lease."""
    return Q(
        id=item_id,
        status=ItemStatus.LEASED,
        lease_token=parse_token(token),
        leased_by=user,
        lease_expires_at__gt=now,
    )


def lease_end(*, user, item: ReviewItem, token: object, status: str, now: datetime) -> None:
    """End the caller's live lease on ``item``, moving it to ``status`` (compare-and-set
    in the caller's transaction); 409 if the lease is lost or expired. ``item`` is
    updated to match the row."""
    updated = ReviewItem.objects.filter(
        live_lease(user=user, item_id=item.id, token=token, now=now)
    ).update(status=status, updated_at=now, **CLEARED_LEASE)
    if not updated:
        raise lease_lost(item.id)
    item.status = status
    item.lease_token = item.leased_by = item.lease_expires_at = None


def _claim_scope(user, queue: str | None) -> frozenset[int] | None:
    scope = queue_scope(user)
    if queue is None:
        return scope
    found = Queue.objects.filter(name=queue).values_list("id", flat=True).first()
    if found is None or (scope is not None and found not in scope):
        raise NotFound(f"No queue {queue!r} of yours.", code="queue_not_found")
    return frozenset({found})


def _serialise_claims_of(user) -> None:
    """Run one reviewer's claims one at a time (a transaction-scoped advisory lock).

    Without it, a second claim by the same reviewer racing the first cannot see the
    lease the first is about to commit, skips the row it locked, and answers "nothing
    ready" although the reviewer is about to hold that item. Claims of different
    reviewers never wait on each other. SQLite runs writers one at a time anyway.
    """
    claim_lock(user_id=user.id)


class _ClaimRaced(Exception):
    """The caller's claim met a lease of theirs it could not see (the unique index)."""


def review_item_claim(*, user, queue: str | None = None) -> ReviewItem | None:
    """Lease the highest-priority ready item of the caller's queues; None when none is.

    A caller who holds a live lease gets that item back with the lease renewed.
    One short transaction; the claimed row is locked only by its own UPDATE. On
    PostgreSQL four statements and the commit: the caller's claim lock, the leases to
    settle (and the caller's own), the claim (which returns the item's output), the
    audit event.
    """
    scope = _claim_scope(user, queue)
    now = timezone.now()
    expires_at = now + timedelta(seconds=settings.REVIEW_LEASE_SECONDS)
    try:
        with transaction.atomic():
            _serialise_claims_of(user)
            held = _settle_leases_of(user=user, now=now)
            if held is not None:
                ReviewItem.objects.filter(id=held, leased_by=user, status=ItemStatus.LEASED).update(
                    lease_expires_at=expires_at, updated_at=now
                )
                return review_item_for_output(item_id=held)
            item = _claim_first(user=user, scope=scope, now=now, expires_at=expires_at)
            if item is None:
                return None
            audit_append(
                events=[
                    Event(
                        Action.CLAIMED,
                        user,
                        item.id,
                        item.prediction_id,
                        {"lease_expires_at": expires_at.isoformat()},
                    )
                ],
                at=now,
            )
            return item
    except _ClaimRaced:
        # The same reviewer claimed twice at once and the other claim won (the
        # transaction above rolled back whole): hand that item back.
        held_id = (
            ReviewItem.objects.filter(leased_by=user, status=ItemStatus.LEASED)
            .values_list("id", flat=True)
            .first()
        )
        return review_item_for_output(item_id=held_id) if held_id else None


def _claim_first(*, user, scope: frozenset[int] | None, now, expires_at) -> ReviewItem | None:
    """Run the claim statement; the leased item, or None when nothing is ready."""
    token = uuid.uuid4()
    # Raw SQL: adapt values as the fields would (SQLite stores UUIDs and times as text).
    prep = connection.ops
    params = [
        ItemStatus.LEASED,
        ReviewItem._meta.get_field("lease_token").get_db_prep_value(token, connection),
        user.id,
        prep.adapt_datetimefield_value(expires_at),
        prep.adapt_datetimefield_value(now),
        ItemStatus.READY,
    ]
    in_queues, queue_ids = sql_in("queue_id", scope)
    try:
        with connection.cursor() as cursor:
            cursor.execute(claim_sql(in_queues), [*params, *queue_ids])
            row = cursor.fetchone()
    except IntegrityError as exc:
        raise _ClaimRaced from exc
    if row is None:
        return None
    if not on_postgresql():
        return review_item_for_output(item_id=row[0])
    return item_join(connection.vendor).load(row)


def _settle_leases_of(*, user, now: datetime) -> int | None:
    """Expire the expired leases of the caller's queues and the caller's own anywhere;
    the id of the item the caller holds a live lease on, if any (its row locked).

    One statement reads both (skipping rows other transactions hold); the expiry
    writes run only when something expired, which a claim rarely finds.
    """
    scope = queue_scope(user)
    prep = connection.ops
    at = prep.adapt_datetimefield_value(now)
    in_queues, queue_ids = sql_in("queue_id", scope)
    with connection.cursor() as cursor:
        cursor.execute(
            settle_sql(in_queues),
            [at, ItemStatus.LEASED, user.id, at, *queue_ids, EXPIRY_BATCH + 1],
        )
        found = cursor.fetchall()
    due_at = ReviewItem._meta.get_field("due_at")
    convert = [*prep.get_db_converters(due_at.get_col("i")), *due_at.get_db_converters(connection)]
    held, rows = None, []
    for item_id, prediction_id, holder_id, expiries, due, expired in found:
        if not expired:
            held = item_id  # the caller's own live lease (the query admits no other)
            continue
        for converter in convert:
            due = converter(due, due_at, connection)
        rows.append(
            {
                "id": item_id,
                "prediction_id": prediction_id,
                "leased_by_id": holder_id,
                "lease_expiries": expiries,
                "due_at": due,
            }
        )
    _expire(rows=rows[:EXPIRY_BATCH], now=now)
    return held


def review_item_heartbeat(*, user, item_id: int, token: object) -> ReviewItem:
    """Extend the caller's live lease; 409 if it is lost or expired."""
    item = review_item_visible(user=user, item_id=item_id)
    now = timezone.now()
    expires_at = now + timedelta(seconds=settings.REVIEW_LEASE_SECONDS)
    updated = ReviewItem.objects.filter(
        live_lease(user=user, item_id=item_id, token=token, now=now)
    ).update(lease_expires_at=expires_at, updated_at=now)
    if not updated:
        raise lease_lost(item_id)
    item.lease_expires_at = expires_at
    return item


def review_item_release(*, user, item_id: int, token: object) -> ReviewItem:
    """Give the item back to the queue unchanged; 409 if the lease is lost."""
    item = review_item_visible(user=user, item_id=item_id)
    now = timezone.now()
    with transaction.atomic():
        lease_end(user=user, item=item, token=token, status=ItemStatus.READY, now=now)
        audit_append(events=[Event(Action.RELEASED, user, item_id, item.prediction_id)], at=now)
    return item


def review_items_expire_leases(*, now: datetime, condition: Q | None = None) -> int:
    """Return items whose lease expired to the queue; the number handled.

    An item whose lease has now expired REVIEW_MAX_LEASE_EXPIRIES times is escalated
    (``repeated_abandonment``) instead of being handed out forever. Locks the expired
    rows it takes (skipping rows another transaction holds); runs in the caller's
    transaction if there is one. Idempotent: a second run finds nothing left.
    """
    with transaction.atomic():
        rows = list(
            ReviewItem.objects.select_for_update(skip_locked=True)
            .filter(condition or Q(), status=ItemStatus.LEASED, lease_expires_at__lte=now)
            .order_by("id")
            .values(*_EXPIRY_COLUMNS)[:EXPIRY_BATCH]
        )
        _expire(rows=rows, now=now)
    return len(rows)


_EXPIRY_COLUMNS = ("id", "prediction_id", "leased_by_id", "lease_expiries", "due_at")


def _expire(*, rows: list[dict], now: datetime) -> None:
    """Return the items of ``rows`` (locked, leased, expired) to the queue, or escalate
    those that reached the expiry limit; with their audit events."""
    if not rows:
        return
    limit = settings.REVIEW_MAX_LEASE_EXPIRIES
    abandoned = [r for r in rows if r["lease_expiries"] + 1 >= limit]
    returned = [r for r in rows if r["lease_expiries"] + 1 < limit]
    ReviewItem.objects.filter(id__in=[r["id"] for r in returned]).update(
        status=ItemStatus.READY,
        lease_expiries=F("lease_expiries") + 1,
        updated_at=now,
        **CLEARED_LEASE,
    )
    ReviewItem.objects.filter(id__in=[r["id"] for r in abandoned]).update(
        status=ItemStatus.ESCALATED,
        lease_expiries=F("lease_expiries") + 1,
        updated_at=now,
        **CLEARED_LEASE,
    )
    Escalation.objects.bulk_create(
        [
            Escalation(
                item_id=r["id"],
                reason=REPEATED_ABANDONMENT,
                raised_at=now,
                lateness_seconds=max(0.0, (now - r["due_at"]).total_seconds()),
                status=EscalationStatus.OPEN,
                comment=f"The lease expired {limit} times without a decision.",
            )
            for r in abandoned
        ]
    )
    webhooks_items_escalated(item_ids=[r["id"] for r in abandoned], at=now)
    events = [
        Event(
            Action.LEASE_EXPIRED,
            None,
            r["id"],
            r["prediction_id"],
            {"holder_id": r["leased_by_id"], "expiries": r["lease_expiries"] + 1},
        )
        for r in rows
    ]
    events += [
        Event(
            Action.ESCALATED,
            None,
            r["id"],
            r["prediction_id"],
            {"reason": REPEATED_ABANDONMENT},
        )
        for r in abandoned
    ]
    audit_append(events=events, at=now)
