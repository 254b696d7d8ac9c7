"""Celery adapters for webhooks: fetch by id, call a service, nothing else.

PostgreSQL holds every delivery's state; a message only says a delivery may be due.
Running ``webhooks.deliver`` twice for one delivery sends it once: the attempt claims
the row first, and a finished, in-flight or not-yet-due delivery is left alone.
"""

import logging

from celery import shared_task
from django.utils import timezone

from .services.delivery import webhook_delivery_attempt
from .services.outbox import (
    DELIVER_TASK,
    webhook_deliveries_due_for_sweep,
    webhook_deliveries_enqueue,
)

logger = logging.getLogger(__name__)

SWEEP_LIMIT = 1000


@shared_task(name=DELIVER_TASK, ignore_result=True, acks_late=True)
def deliver(*, delivery_id: int) -> None:
    """One attempt at a delivery. Retries are not Celery retries: a failed attempt sets
    the delivery's next attempt time and the sweeper sends it when due. ``acks_late``:
    a worker killed mid-attempt leaves the message to be delivered again, and the
    lapsed claim lets the attempt run again."""
    webhook_delivery_attempt(delivery_id=delivery_id)


@shared_task(name="webhooks.sweep", ignore_result=True)
def sweep() -> None:
    """Send deliveries that are due: retries whose backoff has passed, and first
    attempts whose message was lost (periodic)."""
    ids = webhook_deliveries_due_for_sweep(now=timezone.now(), limit=SWEEP_LIMIT)
    if ids:
        logger.info("sending %d due webhook deliveries", len(ids))
        webhook_deliveries_enqueue(delivery_ids=ids)
