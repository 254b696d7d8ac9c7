"""Reads of review items and escalations, scoped to the caller's queues.

The claim and decide path reads an item with its prediction, model version, queue,
explanation and latest return from escalation on every request, in one statement:
``apps.reviews.sql.ItemJoin`` (the SQL and the row loader).
"""

from datetime import datetime

from django.db.models import QuerySet

from apps.queues.scope import in_scope, queue_scope

from .models import Escalation, EscalationStatus, ReviewItem
from .sql import RETURN_CACHE, ItemReturn, item_joined_by_id, item_joined_held_by


def review_item_for_output(*, item_id: int) -> ReviewItem:
    """The item with everything its output shows; ``DoesNotExist`` if there is none."""
    item = review_item_in_scope(item_id=item_id, scope=None)
    if item is None:
        raise ReviewItem.DoesNotExist(f"No review item {item_id}.")
    return item


def review_item_in_scope(*, item_id: int, scope: frozenset[int] | None) -> ReviewItem | None:
    """The item with everything its output shows, if it lies in ``scope`` (a set of
    queue ids; None: any queue); None otherwise. One statement."""
    return item_joined_by_id(item_id=item_id, scope=scope)


def review_item_held_by(*, user, now: datetime) -> ReviewItem | None:
    """The item the caller holds a live lease on, with everything its output shows;
    None if they hold none. One statement."""
    return item_joined_held_by(user_id=user.id, now=now)


def review_item_return(*, item: ReviewItem) -> ItemReturn | None:
    """The item's latest return from escalation (the manager's comment for its next
    reviewer); None if it was never returned. Free for an item the join loaded; one
    query for an item the ORM loaded."""
    if RETURN_CACHE in item.__dict__:
        return item.__dict__[RETURN_CACHE]
    latest = (
        Escalation.objects.filter(
            item_id=item.id, status=EscalationStatus.RETURNED, closed_at__isnull=False
        )
        .order_by("-id")
        .values_list("closing_comment", "closed_at")
        .first()
    )
    found = None
    if latest is not None and latest[1] is not None:
        found = ItemReturn(comment=latest[0], returned_at=latest[1])
    item.__dict__[RETURN_CACHE] = found
    return found


def review_item_visible_to(*, user, item_id: int) -> ReviewItem | None:
    """The item, if it lies in the caller's queues; None otherwise."""
    if not 0 < item_id < 2**63:
        return None
    return review_item_in_scope(item_id=item_id, scope=queue_scope(user))


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
