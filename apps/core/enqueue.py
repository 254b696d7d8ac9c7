"""Sending work to Celery workers once the transaction that made it has committed.

PostgreSQL holds the state; a message only says that work may be waiting. So a message
goes out after commit (a worker never looks for a row that is not there yet), and a
broker outage is logged once and fails nobody: the work waits in PostgreSQL, and the
periodic sweeper of its kind sends it again.
"""

import logging
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from celery import current_app
from django.db import transaction

logger = logging.getLogger(__name__)


def enqueue(task_name: str, messages: Sequence[Mapping[str, Any]], *, what: str) -> None:
    """Send ``task_name`` once per keyword-argument mapping of ``messages``.

    The first failure ends the loop (the rest would fail the same way) with one warning
    line naming ``what`` and how many were not sent. The task is looked up by name, so
    a service never imports its app's tasks module (which imports the services).
    """
    task = current_app.tasks[task_name]
    for sent, kwargs in enumerate(messages):
        try:
            task.delay(**kwargs)
        except Exception as exc:  # the broker is down: the sweeper sends them again
            logger.warning(
                "%s: %d messages not sent (%s); the sweeper will send them",
                what,
                len(messages) - sent,
                exc,
            )
            return


def enqueue_on_commit(task_name: str, messages: Sequence[Mapping[str, Any]], *, what: str) -> None:
    """``enqueue`` after the current transaction commits (at once outside one)."""
    if messages:
        transaction.on_commit(partial(enqueue, task_name, messages, what=what), robust=True)
