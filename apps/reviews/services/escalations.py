"""Escalations: claimed, resolved or returned by escalation managers; raised by the
system when an item's SLA passes.

An escalation is claimed under the same lease rules as an item: a token and an expiry,
compare-and-set on every write. Resolving is a final decision (source
``escalation``); returning puts the item back in the review queue. While an escalation
is open or claimed its item is ``escalated`` and nobody can claim it for review.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import BooleanField, ExpressionWrapper, Q, QuerySet
from django.utils import timezone

from apps.audit.models import Action
from apps.audit.services import Event, audit_append
from apps.core.exceptions import Conflict, NotFound
from apps.queues.scope import in_scope
from apps.reviews.models import (
    DecisionSource,
    Escalation,
    EscalationStatus,
    ItemStatus,
    ReviewItem,
)

from .decisions import check_comment, check_label, decision_record
from .leases import CLEARED_LEASE, EXPIRY_BATCH, parse_token
from .webhook_events import webhooks_items_escalated

SLA_BREACH = "sla_breach"


def escalation_visible(*, user, escalation_id: int) -> Escalation:
    """The escalation, if its item lies in the caller's queues; NotFound otherwise."""
    return _visible(user, escalation_id, Escalation.objects.all())


def _visible(user, escalation_id: int, escalations: QuerySet[Escalation]) -> Escalation:
    found = (
        escalations.select_related("item__prediction__model_version", "raised_by")
        .filter(in_scope(user, "item__queue_id"), id=escalation_id)
        .first()
        if 0 < escalation_id < 2**63
        else None
    )
    if found is None:
        raise NotFound(f"No escalation {escalation_id}.", code="escalation_not_found")
    return found


def _claimed_by(user, now: datetime) -> Q:
    """Escalations under the caller's live claim."""
    return Q(status=EscalationStatus.CLAIMED, claimed_by=user, lease_expires_at__gt=now)


def _claimable(now: datetime) -> Q:
    """Escalations anyone may claim: open ones, and claimed ones whose claim ran out."""
    return Q(status=EscalationStatus.OPEN) | Q(
        status=EscalationStatus.CLAIMED, lease_expires_at__lte=now
    )


@dataclass(frozen=True)
class EscalationStanding:
    """An escalation and what the caller may do with it at a given time."""

    escalation: Escalation
    # Under the caller's live claim: they may resolve or return it (with its token).
    held: bool
    # Open, or its claim ran out: the caller may claim it.
    claimable: bool


def escalation_standing(*, user, escalation_id: int, now: datetime) -> EscalationStanding:
    """The escalation as ``escalation_visible`` finds it, with whether the caller holds
    it and whether they may claim it: the conditions ``escalation_claim`` and the
    closing writes compare-and-set on, evaluated by the database in the same statement."""
    flags = {
        "held": ExpressionWrapper(_claimed_by(user, now), output_field=BooleanField()),
        "claimable": ExpressionWrapper(_claimable(now), output_field=BooleanField()),
    }
    found: Any = _visible(user, escalation_id, Escalation.objects.annotate(**flags))
    return EscalationStanding(
        escalation=found, held=bool(found.held), claimable=bool(found.claimable)
    )


def _held_by(user, now: datetime, token: object = None) -> Q:
    """An escalation the caller may close: claimed by the caller and live (with that
    lease token, when one is presented), or, without a token, an open one."""
    mine = _claimed_by(user, now)
    if token is not None:
        return mine & Q(lease_token=parse_token(token))
    return Q(status=EscalationStatus.OPEN) | mine


def escalation_claim(*, user, escalation_id: int) -> Escalation:
    """Lease an open escalation (or one whose claim expired); the caller's own live
    claim is renewed and returned."""
    escalation = escalation_visible(user=user, escalation_id=escalation_id)
    now = timezone.now()
    expires_at = now + timedelta(seconds=settings.REVIEW_LEASE_SECONDS)
    mine = _claimed_by(user, now)
    with transaction.atomic():
        if Escalation.objects.filter(mine, id=escalation_id).update(lease_expires_at=expires_at):
            escalation.refresh_from_db()
            return escalation
        token = uuid.uuid4()
        updated = Escalation.objects.filter(_claimable(now), id=escalation_id).update(
            status=EscalationStatus.CLAIMED,
            claimed_by=user,
            lease_token=token,
            lease_expires_at=expires_at,
        )
        if not updated:
            raise Conflict(
                f"Escalation {escalation_id} is claimed by someone else or closed.",
                code="escalation_not_claimable",
            )
        audit_append(
            events=[
                Event(
                    Action.ESCALATION_CLAIMED,
                    user,
                    escalation.item_id,
                    escalation.item.prediction_id,
                    {"escalation_id": escalation_id},
                )
            ],
            at=now,
        )
    escalation.refresh_from_db()
    return escalation


def _close(
    *, user, escalation: Escalation, status: str, comment: str, now: datetime, token: object
) -> None:
    """Move the escalation to ``status`` if the caller may close it; 409 otherwise."""
    updated = Escalation.objects.filter(_held_by(user, now, token), id=escalation.id).update(
        status=status,
        closed_by=user,
        closed_at=now,
        closing_comment=comment,
        lease_token=None,
        lease_expires_at=None,
    )
    if not updated:
        raise Conflict(
            f"Escalation {escalation.id} is claimed by someone else or closed.",
            code="escalation_not_held",
        )


def escalation_resolve(
    *, user, escalation_id: int, label: object, comment: object = None, token: object = None
) -> Escalation:
    """Decide the escalated item with a final label (source ``escalation``)."""
    escalation = escalation_visible(user=user, escalation_id=escalation_id)
    item = escalation.item
    label = check_label(item, label)
    comment = check_comment(comment)
    now = timezone.now()
    with transaction.atomic():
        _close(
            user=user,
            escalation=escalation,
            status=EscalationStatus.RESOLVED,
            comment=comment,
            now=now,
            token=token,
        )
        moved = ReviewItem.objects.filter(id=item.id, status=ItemStatus.ESCALATED).update(
            status=ItemStatus.DECIDED, updated_at=now
        )
        if not moved:  # the invariant says this cannot happen; refuse rather than guess
            raise Conflict(f"Item {item.id} is not escalated.", code="item_not_escalated")
        decision_record(
            item=item,
            user=user,
            label=label,
            source=DecisionSource.ESCALATION,
            reason_code="",
            comment=comment,
            now=now,
        )
        audit_append(
            events=[
                Event(
                    Action.ESCALATION_RESOLVED,
                    user,
                    item.id,
                    item.prediction_id,
                    {"escalation_id": escalation.id, "label": label},
                )
            ],
            at=now,
        )
    escalation.refresh_from_db()
    return escalation


def escalation_return(
    *, user, escalation_id: int, comment: object = None, token: object = None
) -> Escalation:
    """Send the item back to the review queue, with a comment for its next reviewer."""
    escalation = escalation_visible(user=user, escalation_id=escalation_id)
    comment = check_comment(comment)
    now = timezone.now()
    with transaction.atomic():
        _close(
            user=user,
            escalation=escalation,
            status=EscalationStatus.RETURNED,
            comment=comment,
            now=now,
            token=token,
        )
        # A fresh start: earlier abandoned leases must not escalate it again at once.
        ReviewItem.objects.filter(id=escalation.item_id, status=ItemStatus.ESCALATED).update(
            status=ItemStatus.READY, lease_expiries=0, updated_at=now
        )
        audit_append(
            events=[
                Event(
                    Action.ESCALATION_RETURNED,
                    user,
                    escalation.item_id,
                    escalation.item.prediction_id,
                    {"escalation_id": escalation.id},
                )
            ],
            at=now,
        )
    escalation.refresh_from_db()
    return escalation


def review_items_escalate_sla_breaches(*, now: datetime | None = None) -> int:
    """Escalate undecided items past their SLA (``sla_breach``); the number escalated.

    Each item is escalated for its breach once: ``sla_breached_at`` marks it, so an
    item a manager returns is not escalated again. Skips rows other transactions hold.
    """
    now = now or timezone.now()
    open_states = [ItemStatus.PENDING, ItemStatus.READY, ItemStatus.LEASED]
    with transaction.atomic():
        rows = list(
            ReviewItem.objects.select_for_update(skip_locked=True)
            .filter(status__in=open_states, sla_breached_at__isnull=True, due_at__lt=now)
            .order_by("due_at", "id")
            .values("id", "prediction_id", "due_at", "leased_by_id")[:EXPIRY_BATCH]
        )
        if not rows:
            return 0
        ReviewItem.objects.filter(id__in=[r["id"] for r in rows]).update(
            status=ItemStatus.ESCALATED,
            sla_breached_at=now,
            updated_at=now,
            **CLEARED_LEASE,
        )
        Escalation.objects.bulk_create(
            [
                Escalation(
                    item_id=r["id"],
                    reason=SLA_BREACH,
                    raised_at=now,
                    lateness_seconds=(now - r["due_at"]).total_seconds(),
                )
                for r in rows
            ]
        )
        webhooks_items_escalated(item_ids=[r["id"] for r in rows], at=now)
        audit_append(
            events=[
                Event(
                    Action.ESCALATED,
                    None,
                    r["id"],
                    r["prediction_id"],
                    {
                        "reason": SLA_BREACH,
                        "lateness_seconds": (now - r["due_at"]).total_seconds(),
                        "holder_id": r["leased_by_id"],
                    },
                )
                for r in rows
            ],
            at=now,
        )
    return len(rows)


def escalations_expire_claims(*, now: datetime | None = None) -> int:
    """Reopen escalations whose claim expired; the number reopened."""
    now = now or timezone.now()
    with transaction.atomic():
        rows = list(
            Escalation.objects.select_for_update(skip_locked=True)
            .filter(status=EscalationStatus.CLAIMED, lease_expires_at__lte=now)
            .values("id", "item_id", "item__prediction_id", "claimed_by_id")[:EXPIRY_BATCH]
        )
        if not rows:
            return 0
        Escalation.objects.filter(id__in=[r["id"] for r in rows]).update(
            status=EscalationStatus.OPEN,
            claimed_by=None,
            lease_token=None,
            lease_expires_at=None,
        )
        audit_append(
            events=[
                Event(
                    Action.ESCALATION_LEASE_EXPIRED,
                    None,
                    r["item_id"],
                    r["item__prediction_id"],
                    {"escalation_id": r["id"], "holder_id": r["claimed_by_id"]},
                )
                for r in rows
            ],
            at=now,
        )
    return len(rows)
