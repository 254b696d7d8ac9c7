"""Writes to queues."""

from apps.reviews.models import Queue


def queue_get_or_create(*, name: str) -> Queue:
    """The queue called ``name``, created if it does not exist yet (race-safe)."""
    queue, _ = Queue.objects.get_or_create(name=name)
    return queue
