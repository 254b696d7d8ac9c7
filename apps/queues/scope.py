"""Which queues a reviewer or escalation manager works on."""

from collections.abc import Iterable

from django.db.models import Q


def queue_scope(user) -> frozenset[int] | None:
    """The ids of the caller's queues, or None for every queue (no membership at all).

    Cached on the user object for the request.
    """
    if not hasattr(user, "_reviewqueue_queue_scope"):
        scope_remember(user, user.review_queues.values_list("id", flat=True))
    return user._reviewqueue_queue_scope


def scope_remember(user, queue_ids: Iterable[int]) -> None:
    """Cache the caller's queue ids on the user object, read by whoever loaded the user
    (the queue endpoints' authentication reads them with the token, in one query)."""
    user._reviewqueue_queue_scope = frozenset(queue_ids) or None


def in_scope(user, field: str = "queue_id") -> Q:
    """A filter for rows of the caller's queues; ``field`` names the queue column."""
    scope = queue_scope(user)
    return Q() if scope is None else Q(**{f"{field}__in": scope})
