"""Celery adapters for review items: fetch by id, call a service, nothing else."""

import logging

from celery import shared_task
from django.utils import timezone

from .services import queues
from .services.escalations import escalations_expire_claims, review_items_escalate_sla_breaches
from .services.leases import EXPIRY_BATCH, review_items_expire_leases

logger = logging.getLogger(__name__)


@shared_task(name="reviews.explain_items", ignore_result=True, acks_late=True)
def explain_items(*, item_ids: list[int]) -> None:
    """Make the items claimable once their explanation work is done.

    Idempotent: it moves only items still ``pending``, so a redelivered message or a
    second run changes nothing.
    """
    queues.review_items_mark_explained(item_ids=item_ids)


def enqueue_explanations(*, item_ids: list[int]) -> None:
    """Queue explanation work for freshly routed items; called after commit.

    A broker outage must not fail the intake that already committed: the items stay
    ``pending`` in PostgreSQL, the source of truth, and are picked up again later.
    """
    try:
        explain_items.delay(item_ids=item_ids)
    except Exception:
        logger.exception("could not enqueue explanations for %d items", len(item_ids))


@shared_task(name="reviews.expire_leases", ignore_result=True)
def expire_leases() -> None:
    """Return items whose lease expired to the queue, and reopen expired escalation
    claims (periodic). Each batch is its own short transaction."""
    now = timezone.now()
    while review_items_expire_leases(now=now) == EXPIRY_BATCH:
        pass
    while escalations_expire_claims(now=now) == EXPIRY_BATCH:
        pass


@shared_task(name="reviews.escalate_sla_breaches", ignore_result=True)
def escalate_sla_breaches() -> None:
    """Escalate undecided items past their SLA (periodic)."""
    now = timezone.now()
    while review_items_escalate_sla_breaches(now=now) == EXPIRY_BATCH:
        pass
