"""Appending to the audit trail."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection, transaction

from .chain import GENESIS, event_hash
from .models import AuditEvent

# The advisory lock key that serialises appends (an arbitrary constant: "auditlog").
AUDIT_LOCK_KEY = 0x6175646974_6C6F67 & 0x7FFFFFFFFFFFFFFF


@dataclass(frozen=True)
class Event:
    action: str
    actor: Any = None  # a User, or None for the system
    item_id: int | None = None
    prediction_id: int | None = None
    data: dict[str, Any] = field(default_factory=dict)


def audit_append(*, events: Sequence[Event], at: datetime) -> None:
    """Append events to the chain, in order, inside the caller's transaction.

    Takes the audit lock (PostgreSQL: a transaction-scoped advisory lock; SQLite
    serialises writers anyway) and holds it until the caller commits: call it as the
    last write of the transaction, so the lock is held as briefly as possible.
    """
    if not events:
        return
    if not connection.in_atomic_block:
        raise RuntimeError("audit_append must run inside the transaction of its change")
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [AUDIT_LOCK_KEY])
    # A statement after the lock sees every event committed before it was granted.
    prev_hash = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first() or GENESIS
    rows = []
    for event in events:
        actor_id = event.actor.id if event.actor is not None else None
        actor = event.actor.get_username() if event.actor is not None else ""
        digest = event_hash(
            prev_hash=prev_hash,
            at=at,
            actor_id=actor_id,
            actor=actor,
            action=event.action,
            item_id=event.item_id,
            prediction_id=event.prediction_id,
            data=event.data,
        )
        rows.append(
            AuditEvent(
                at=at,
                actor_id=actor_id,
                actor=actor,
                action=event.action,
                item_id=event.item_id,
                prediction_id=event.prediction_id,
                data=event.data,
                prev_hash=prev_hash,
                hash=digest,
            )
        )
        prev_hash = digest
    AuditEvent.objects.bulk_create(rows)


def audit_record(*, event: Event, at: datetime) -> None:
    """Append one event in a transaction of its own (for refusals that change nothing)."""
    with transaction.atomic():
        audit_append(events=[event], at=at)
