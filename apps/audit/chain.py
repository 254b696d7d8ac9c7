"""The hash of an audit event: a pure function of its content and its predecessor."""

import hashlib
import json
from datetime import datetime
from typing import Any

GENESIS = "0" * 64


def event_hash(
    *,
    prev_hash: str,
    at: datetime,
    actor_id: int | None,
    actor: str,
    action: str,
    item_id: int | None,
    prediction_id: int | None,
    data: dict[str, Any],
) -> str:
    content = [prev_hash, at.isoformat(), actor_id, actor, action, item_id, prediction_id, data]
    encoded = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode()).hexdigest()


def stored_event_hash(event: Any) -> str:
    """The hash a stored event (an ``AuditEvent``) must carry, from its own fields."""
    return event_hash(
        prev_hash=event.prev_hash,
        at=event.at,
        actor_id=event.actor_id,
        actor=event.actor,
        action=event.action,
        item_id=event.item_id,
        prediction_id=event.prediction_id,
        data=event.data,
    )
