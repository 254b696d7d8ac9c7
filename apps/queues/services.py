"""Writes to queues and memberships."""

from collections.abc import Iterable

from django.contrib.auth.models import User

from .models import Queue


def queue_get_or_create(*, name: str) -> Queue:
    """The queue called ``name``, created if it does not exist yet (race-safe)."""
    queue, _ = Queue.objects.get_or_create(name=name)
    return queue


def memberships_set(*, user: User, queues: Iterable[str]) -> None:
    """Make ``user`` a member of exactly ``queues`` (created when missing); none means
    every queue. The caller owns the transaction."""
    user.review_queues.set([queue_get_or_create(name=name) for name in dict.fromkeys(queues)])
