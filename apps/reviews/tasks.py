"""Celery adapters for review items: fetch by id, call a service, nothing else.

PostgreSQL holds the state; a message only says that work may be waiting. Every task
here is idempotent, so a redelivered or duplicated message changes nothing.
"""

import logging

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from .services.escalations import escalations_expire_claims, review_items_escalate_sla_breaches
from .services.explanations import (
    EXPLAIN_BATCH,
    EXPLAIN_TASK,
    review_items_due_for_explanation,
    review_items_explain,
    review_items_explanation_failed,
    review_items_request_explanations,
)
from .services.leases import EXPIRY_BATCH, review_items_expire_leases

logger = logging.getLogger(__name__)


@shared_task(
    name=EXPLAIN_TASK,
    bind=True,
    ignore_result=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=3,
)
def explain_items(self, *, item_ids: list[int]) -> None:
    """Explain routed items (one SHAP call per model version) and make them claimable.

    ``acks_late``: a worker killed mid-batch leaves the message to be delivered again,
    and running twice stores one explanation (unique per prediction). After the last
    retry the items become claimable with ``explanation_status: failed``.

    A worker's first attempt also takes on other waiting items of the same models, up
    to ``EXPLAIN_BATCH`` in all: under a backlog of small messages one run explains
    what many messages named, and those messages then find nothing left to do.
    """
    first_on_a_worker = not self.app.conf.task_always_eager and not self.request.retries
    coalesce = max(0, EXPLAIN_BATCH - len(item_ids)) if first_on_a_worker else 0
    failed, error = review_items_explain(item_ids=item_ids, coalesce=coalesce)
    if failed and self.app.conf.task_always_eager:
        # In-process (no broker): retry at once, then record the failure.
        for _ in range(self.max_retries):
            failed, error = review_items_explain(item_ids=failed)
            if not failed:
                return
        review_items_explanation_failed(item_ids=failed, error=error)
        return
    if not failed:
        return
    if self.request.retries >= self.max_retries:
        logger.error("explanations failed for %d items: %s", len(failed), error)
        review_items_explanation_failed(item_ids=failed, error=error)
        return
    raise self.retry(kwargs={"item_ids": failed}, countdown=2**self.request.retries)


@shared_task(name="reviews.sweep_explanations", ignore_result=True)
def sweep_explanations() -> None:
    """Re-send explanation work for items still waiting after the grace period
    (periodic): a lost message, a killed worker or a broker outage delays an item,
    never strands it."""
    ids = review_items_due_for_explanation(
        now=timezone.now(),
        grace_seconds=settings.REVIEW_EXPLANATION_GRACE_SECONDS,
        limit=20 * EXPLAIN_BATCH,
    )
    if ids:
        logger.info("re-sending explanation work for %d items", len(ids))
        review_items_request_explanations(item_ids=ids)


@shared_task(name="reviews.expire_leases", ignore_result=True)
def expire_leases() -> None:
    """Return items whose lease expired to the queue, and reopen expired escalation
    claims (periodic). Each batch is its own short transaction."""
    now = timezone.now()
    _drain(review_items_expire_leases, now)
    _drain(escalations_expire_claims, now)


@shared_task(name="reviews.escalate_sla_breaches", ignore_result=True)
def escalate_sla_breaches() -> None:
    """Escalate undecided items past their SLA (periodic)."""
    _drain(review_items_escalate_sla_breaches, timezone.now())


def _drain(step, now) -> None:
    """Run a batch step until it handles less than a full batch: nothing is left."""
    while step(now=now) == EXPIRY_BATCH:
        continue
