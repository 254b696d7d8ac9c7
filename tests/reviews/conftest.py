"""Fixtures and helpers for the review queue tests: items made straight in the
database, accounts, threads that each use their own connection, and snapshots of the
review state to show that a refused call changed nothing."""

import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.utils import timezone

from apps.accounts.services import account_upsert
from apps.audit.models import AuditEvent
from apps.predictions.models import Prediction
from apps.queues.models import Queue
from apps.registry.models import ModelVersion
from apps.reviews.models import Decision, Escalation, ExplanationStatus, ItemStatus, ReviewItem


def make_items(
    *,
    model_version: ModelVersion,
    n: int,
    prefix: str = "item",
    status: str = ItemStatus.READY,
    due_at: datetime | None = None,
    due_step: timedelta = timedelta(seconds=1),
    queue: Queue | None = None,
) -> list[int]:
    """Make ``n`` routed predictions and their review items in two INSERTs; the item
    ids in creation order. Items are due ``due_step`` apart from ``due_at`` on (so a
    claim takes them in creation order); the model's label is always ``approve``."""
    now = timezone.now()
    due_at = due_at or now + timedelta(hours=4)
    predictions = Prediction.objects.bulk_create(
        [
            Prediction(
                model_version=model_version,
                external_id=f"{prefix}-{i}",
                content_hash=f"{i:064x}",
                features={"income": 1000 + i, "region": "n", "age": 41, "homeowner": False},
                context={"amount": 20000},
                label="approve",
                probabilities={"approve": 0.6, "deny": 0.4},
                routed=True,
                reasons=["low_confidence"],
                selection_probability=1.0,
                created_at=now,
            )
            for i in range(n)
        ],
        batch_size=5000,
    )
    items = ReviewItem.objects.bulk_create(
        [
            ReviewItem(
                prediction_id=p.id,
                queue=queue or model_version.queue,
                status=status,
                reasons=["low_confidence"],
                priority=float(i % 7),
                due_at=due_at + i * due_step,
                explanation_status=(
                    ExplanationStatus.PENDING
                    if status == ItemStatus.PENDING
                    else ExplanationStatus.READY
                ),
            )
            for i, p in enumerate(predictions)
        ],
        batch_size=5000,
    )
    return [item.id for item in items]


@pytest.fixture
def model_version(registered_model) -> ModelVersion:
    """credit-default:3, registered through the API, routing to queue ``default``."""
    return ModelVersion.objects.get(id=registered_model["id"])


@pytest.fixture
def ready_items(model_version) -> Callable[..., list[int]]:
    def make(n: int, **kwargs: Any) -> list[int]:
        return make_items(model_version=model_version, n=n, **kwargs)

    return make


def lease_each_to_its_own_reviewer(item_ids: list[int], *, expires_at: datetime) -> None:
    """Put a live lease on each item, as if each had been claimed by another reviewer."""
    users = User.objects.bulk_create(User(username=f"bulk-rev-{i}") for i in item_ids)
    ReviewItem.objects.bulk_update(
        [
            ReviewItem(
                id=item_id,
                status=ItemStatus.LEASED,
                leased_by=user,
                lease_token=uuid.uuid4(),
                lease_expires_at=expires_at,
            )
            for item_id, user in zip(item_ids, users, strict=True)
        ],
        ["status", "leased_by", "lease_token", "lease_expires_at"],
    )


def make_user(username: str, *roles: str, queues: Iterable[str] = ()):
    return account_upsert(username=username, roles=roles or ("reviewer",), queues=queues)


def run_in_threads(target: Callable[..., Any], args: list[tuple]) -> list[Any]:
    """Run ``target(*a)`` for each ``a`` in its own thread, each with its own database
    connection (closed at the thread's end); the results in order. Any exception in a
    thread fails the test."""
    results: list[Any] = [None] * len(args)
    errors: list[BaseException] = []

    def run(index: int, a: tuple) -> None:
        try:
            results[index] = target(*a)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(args)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    if errors:
        raise errors[0]
    return results


def review_state() -> dict[str, Any]:
    """What a refused call must leave alone: items by status and lease, decisions,
    escalations by status, and the audit trail (refusals may only add ``denied``)."""
    return {
        "items": sorted(
            ReviewItem.objects.values_list(
                "id",
                "status",
                "lease_token",
                "leased_by_id",
                "lease_expires_at",
                "lease_expiries",
                "sla_breached_at",
            )
        ),
        "item_statuses": Counter(ReviewItem.objects.values_list("status", flat=True)),
        "decisions": Decision.objects.count(),
        "escalations": sorted(
            Escalation.objects.values_list("id", "status", "claimed_by_id", "lease_token")
        ),
        "audit": list(AuditEvent.objects.exclude(action="denied").values_list("id", flat=True)),
    }
