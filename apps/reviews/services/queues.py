"""Writes to queues and review items."""

from django.utils import timezone

from apps.reviews.models import ItemStatus, Queue, ReviewItem


def queue_get_or_create(*, name: str) -> Queue:
    """The queue called ``name``, created if it does not exist yet (race-safe)."""
    queue, _ = Queue.objects.get_or_create(name=name)
    return queue


def review_items_mark_explained(*, item_ids: list[int]) -> int:
    """Move pending items to ``ready``; the number moved.

    Stand-in for the explanation pipeline (it records no explanation yet): a guarded
    update, so items that moved on already are left alone.
    """
    return ReviewItem.objects.filter(id__in=item_ids, status=ItemStatus.PENDING).update(
        status=ItemStatus.READY, updated_at=timezone.now()
    )
