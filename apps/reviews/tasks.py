"""Celery adapters for review items: fetch by id, call a service, nothing else."""

import logging

from celery import shared_task

from . import services

logger = logging.getLogger(__name__)


@shared_task(name="reviews.explain_items", ignore_result=True, acks_late=True)
def explain_items(*, item_ids: list[int]) -> None:
    """Make the items claimable once their explanation work is done.

    Idempotent: it moves only items still ``pending``, so a redelivered message or a
    second run changes nothing.
    """
    services.review_items_mark_explained(item_ids=item_ids)


def enqueue_explanations(*, item_ids: list[int]) -> None:
    """Queue explanation work for freshly routed items; called after commit.

    A broker outage must not fail the intake that already committed: the items stay
    ``pending`` in PostgreSQL, the source of truth, and are picked up again later.
    """
    try:
        explain_items.delay(item_ids=item_ids)
    except Exception:
        logger.exception("could not enqueue explanations for %d items", len(item_ids))
