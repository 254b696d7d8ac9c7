"""Appending to the audit trail.

On PostgreSQL an append is one statement, ``audit_append_events`` (migration 0003):
it takes the audit lock, reads the last hash and inserts the events, so the lock is
held for one round trip and the commit instead of three and the commit. Python still
encodes each event's content (``_content_tail``): the hash is the one ``chain.py``
defines, whoever computes it. SQLite runs the same steps from Python.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection, transaction

from apps.core.db import on_postgresql

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
    if on_postgresql():
        payload = [_row(event, at) for event in events]
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT audit_append_events(%s, %s::jsonb)",
                [AUDIT_LOCK_KEY, json.dumps(payload, ensure_ascii=False)],
            )
        return
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


def _row(event: Event, at: datetime) -> dict[str, Any]:
    """The columns of one event for ``audit_append_events``, and its ``tail``."""
    actor_id = event.actor.id if event.actor is not None else None
    actor = event.actor.get_username() if event.actor is not None else ""
    content = [at.isoformat(), actor_id, actor, event.action, event.item_id, event.prediction_id]
    return {
        "at": content[0],
        "actor_id": actor_id,
        "actor": actor,
        "action": str(event.action),
        "item_id": event.item_id,
        "prediction_id": event.prediction_id,
        "data": event.data,
        "tail": _content_tail([*content, event.data]),
    }


# chain.event_hash's encoding: json.dumps(..., sort_keys=True, separators=(",", ":"),
# ensure_ascii=False). tests/audit compare the two on awkward content.
_encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_HEAD = len('["' + GENESIS + '",')


def _content_tail(content: list[Any]) -> str:
    """The canonical JSON that ``chain.event_hash`` hashes, less ``["<prev_hash>",``.

    For any 64-hex-digit ``p``, ``event_hash(prev_hash=p, ...)`` is the SHA-256 of
    ``'["' + p + '",' + tail``: hex digits need no escaping, so the head is fixed.
    """
    return _encoder.encode([GENESIS, *content])[_HEAD:]


def audit_record(*, event: Event, at: datetime) -> None:
    """Append one event in a transaction of its own (for refusals that change nothing)."""
    with transaction.atomic():
        audit_append(events=[event], at=at)
