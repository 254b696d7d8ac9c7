"""Review items waiting for their explanation: explained in batches, then claimable.

The SHAP work (``apps.explanations.services``) runs outside any transaction; what
follows is one short write per batch: the explanations inserted with ``ON CONFLICT DO
NOTHING`` and the items moved on by a guarded update (``WHERE explanation_status =
'pending'``), on PostgreSQL in one statement. Running a batch twice stores one
explanation per prediction and changes nothing the second time.

A run may take on more than its message named (``coalesce``): other waiting items of
the same model versions, reserved under ``SKIP LOCKED`` by stamping their
``explanation_requested_at``, so a backlog of small messages becomes one SHAP call
and one store, and the later messages find their items done. A reserved item whose
run dies waits for the sweeper, as an item whose message was lost does.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from apps.core.db import on_postgresql
from apps.core.enqueue import enqueue
from apps.explanations.models import Explanation
from apps.explanations.services import (
    explain_predictions,
    explanations_build,
    explanations_insert,
)
from apps.explanations.shap_core import RowExplanation
from apps.registry.models import ModelVersion
from apps.reviews.models import ExplanationStatus, ItemStatus, ReviewItem
from apps.reviews.sql import explanations_store_and_ready

# Items per explanation message, and at most per run (coalescing included).
EXPLAIN_BATCH = 500
EXPLAIN_TASK = "reviews.explain_items"


class _Waiting(NamedTuple):
    """What explaining one item needs of it and of its prediction."""

    id: int
    prediction_id: int
    model_version_id: int
    features: dict[str, Any]
    label: str
    probabilities: dict[str, float]
    attributions: dict[str, Any] | None


def review_items_explain(*, item_ids: list[int], coalesce: int = 0) -> tuple[list[int], str]:
    """Explain the items still waiting for it and make them claimable.

    With ``coalesce``, also up to that many other waiting items of the same model
    versions that no other run has reserved (see the module docstring). Returns the
    ids that failed and the last error, for the caller to retry. Items already
    explained (or gone) are skipped: a redelivered batch changes nothing.
    """
    items = _waiting(item_ids)
    if coalesce and items:
        versions = sorted({item.model_version_id for item in items})
        more = _reserve_waiting(
            versions=versions, exclude=[item.id for item in items], limit=coalesce
        )
        items += _waiting(more)
    by_version: dict[int, list[_Waiting]] = defaultdict(list)
    for item in items:
        by_version[item.model_version_id].append(item)
    versions_by_id = ModelVersion.objects.in_bulk(list(by_version))

    now = timezone.now()
    explanations: list[Explanation] = []
    explained: list[int] = []
    failed: list[int] = []
    error = ""
    for version_id, group in by_version.items():
        try:
            rows = explain_predictions(versions_by_id[version_id], group)
        except Exception as exc:  # any failure of a model's batch: retried, then recorded
            failed += [item.id for item in group]
            error = f"{type(exc).__name__}: {exc}"[:2000]
            continue
        done: list[tuple[_Waiting, RowExplanation]] = list(zip(group, rows, strict=True))
        explanations += explanations_build(done, version=versions_by_id[version_id], now=now)
        explained += [item.id for item in group]
    _store(explanations, item_ids=explained, now=now)
    return failed, error


def _waiting(item_ids: list[int]) -> list[_Waiting]:
    """The items of ``item_ids`` still waiting for their explanation, with what the
    explainer reads of their predictions (no model instances, no unused columns)."""
    if not item_ids:
        return []
    rows = (
        ReviewItem.objects.filter(id__in=item_ids, explanation_status=ExplanationStatus.PENDING)
        .order_by("id")
        .values_list(
            "id",
            "prediction_id",
            "prediction__model_version_id",
            "prediction__features",
            "prediction__label",
            "prediction__probabilities",
            "prediction__attributions",
        )
    )
    return [_Waiting(*row) for row in rows]


def _reserve_waiting(*, versions: list[int], exclude: list[int], limit: int) -> list[int]:
    """Up to ``limit`` other waiting items of ``versions``, oldest first, that no run
    reserved within the sweeper's grace period; stamped as requested now (reserved).

    Rows another transaction holds are skipped, so two runs never reserve the same
    item; a message naming a reserved item still explains it (at worst twice, which
    stores one explanation).
    """
    now = timezone.now()
    fresh = now - timedelta(seconds=settings.REVIEW_EXPLANATION_GRACE_SECONDS)
    with transaction.atomic():
        ids = list(
            ReviewItem.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(
                Q(explanation_requested_at__isnull=True) | Q(explanation_requested_at__lt=fresh),
                explanation_status=ExplanationStatus.PENDING,
                prediction__model_version_id__in=versions,
            )
            .exclude(id__in=exclude)
            .order_by("created_at", "id")
            .values_list("id", flat=True)[:limit]
        )
        if ids:
            ReviewItem.objects.filter(id__in=ids).update(explanation_requested_at=now)
    return ids


def _store(explanations: list[Explanation], *, item_ids: list[int], now: datetime) -> None:
    """Store the explanations and make their items claimable, atomically."""
    if not item_ids:
        return
    if on_postgresql():
        explanations_store_and_ready(explanations, item_ids=item_ids, now=now)
        return
    with transaction.atomic():
        explanations_insert(explanations=explanations)
        _finish(item_ids, ExplanationStatus.READY, "", now)


def _finish(item_ids: list[int], outcome: str, error: str, now: datetime) -> int:
    """Record the explanation outcome; a waiting item becomes claimable."""
    return ReviewItem.objects.filter(
        id__in=item_ids, explanation_status=ExplanationStatus.PENDING
    ).update(
        explanation_status=outcome,
        explanation_error=error,
        status=Case(
            When(status=ItemStatus.PENDING, then=Value(ItemStatus.READY)), default=F("status")
        ),
        updated_at=now,
    )


def review_items_explanation_failed(*, item_ids: list[int], error: str) -> int:
    """After the last retry: make the items claimable without an explanation."""
    return _finish(item_ids, ExplanationStatus.FAILED, error or "unknown error", timezone.now())


def review_items_due_for_explanation(
    *, now: datetime, grace_seconds: float, limit: int
) -> list[int]:
    """Items whose explanation is still missing after the grace period; their request
    time is renewed, so the next sweep leaves them alone for another period."""
    cutoff = now - timedelta(seconds=grace_seconds)
    with transaction.atomic():
        ids = list(
            ReviewItem.objects.select_for_update(skip_locked=True)
            .filter(
                Q(explanation_requested_at__lt=cutoff)
                | Q(explanation_requested_at__isnull=True, created_at__lt=cutoff),
                explanation_status=ExplanationStatus.PENDING,
            )
            .order_by("id")
            .values_list("id", flat=True)[:limit]
        )
        ReviewItem.objects.filter(id__in=ids).update(explanation_requested_at=now)
    return ids


def explanation_messages(item_ids: list[int]) -> list[dict[str, list[int]]]:
    """The explanation task's messages for ``item_ids``, ``EXPLAIN_BATCH`` items each."""
    return [
        {"item_ids": item_ids[start : start + EXPLAIN_BATCH]}
        for start in range(0, len(item_ids), EXPLAIN_BATCH)
    ]


def review_items_request_explanations(*, item_ids: list[int]) -> None:
    """Send the explanation work of ``item_ids`` now (the sweeper's re-send).

    A broker outage fails nobody: the items wait in PostgreSQL and the next sweep
    sends their work again."""
    enqueue(EXPLAIN_TASK, explanation_messages(item_ids), what="explanation work")
