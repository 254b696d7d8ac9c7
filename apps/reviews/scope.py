"""Which queues a reviewer or escalation manager works on."""

from django.db.models import Q


def queue_scope(user) -> frozenset[int] | None:
    """The ids of the caller's queues, or None for every queue (no membership at all).

    Cached on the user object for the request.
    """
    if not hasattr(user, "_reviewqueue_queue_scope"):
        ids = frozenset(user.review_queues.values_list("id", flat=True))
        user._reviewqueue_queue_scope = ids or None
    return user._reviewqueue_queue_scope


def in_scope(user, field: str = "queue_id") -> Q:
    """A filter for rows of the caller's queues; ``field`` names the queue column."""
    scope = queue_scope(user)
    return Q() if scope is None else Q(**{f"{field}__in": scope})
