"""Reads of review items and escalations, scoped to the caller's queues."""

from django.db.models import QuerySet

from .models import Escalation, EscalationStatus, ReviewItem
from .scope import in_scope


def review_item_for_output(*, item_id: int) -> ReviewItem:
    return ReviewItem.objects.select_related(
        "prediction__model_version", "prediction__explanation", "queue"
    ).get(id=item_id)


def escalation_list(*, user, status: str | None = None) -> QuerySet[Escalation]:
    qs = Escalation.objects.select_related(
        "item__prediction__model_version",
        "item__prediction__explanation",
        "item__queue",
        "raised_by",
    ).filter(in_scope(user, "item__queue_id"))
    if status is not None:
        qs = qs.filter(status=status)
    return qs


ESCALATION_STATUSES = EscalationStatus.values
