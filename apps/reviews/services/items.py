"""Review items created for routed predictions, at intake."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from apps.audit.models import Action
from apps.audit.services import Event, audit_append
from apps.core.enqueue import enqueue_on_commit
from apps.reviews.models import ReviewItem

from .explanations import EXPLAIN_TASK, explanation_messages


@dataclass(frozen=True, slots=True)
class NewItem:
    """A routed prediction's claim on a reviewer: where, why, how urgent."""

    prediction_id: int
    queue_id: int
    reasons: Sequence[str]
    priority: float
    sla_seconds: float | None


def review_items_create(*, items: Sequence[NewItem], producer, now: datetime) -> list[int]:
    """Queue routed predictions for review; the new items' ids, in order.

    One multi-row insert and one audit append, in the caller's transaction (the
    intake's, beside the predictions); the explanation work is sent after commit.
    """
    created = ReviewItem.objects.bulk_create(
        [
            ReviewItem(
                prediction_id=item.prediction_id,
                queue_id=item.queue_id,
                reasons=list(item.reasons),
                priority=item.priority,
                due_at=now + timedelta(seconds=item.sla_seconds or 0),
                created_at=now,
                updated_at=now,
            )
            for item in items
        ]
    )
    audit_append(
        events=[
            Event(
                Action.ITEM_CREATED,
                producer,
                item.id,
                item.prediction_id,
                {"reasons": item.reasons, "due_at": item.due_at.isoformat()},
            )
            for item in created
        ],
        at=now,
    )
    ids = [item.id for item in created]
    enqueue_on_commit(EXPLAIN_TASK, explanation_messages(ids), what="explanation work")
    return ids
