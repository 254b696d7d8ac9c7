"""Computing and storing explanations for routed predictions, in batches.

The SHAP work runs outside any transaction; the writes that follow are one short
transaction per batch: explanations inserted with ``ON CONFLICT DO NOTHING`` on the
unique prediction, items moved on with a guarded update. Running a batch twice stores
one explanation per prediction and changes nothing the second time.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from apps.registry.models import ModelArtifact, ModelVersion
from apps.reviews.models import ExplanationStatus, ItemStatus, ReviewItem

from .artifacts import load_model
from .models import Explanation
from .shap_core import (
    Explainer,
    RowExplanation,
    build_explainer,
    explain_batch,
    precomputed_explanation,
    precomputed_model_output,
)

# Explainers are built once per model version and process; versions are immutable.
_explainers: dict[int, Explainer] = {}


def explainer_for(version: ModelVersion) -> Explainer:
    found = _explainers.get(version.id)
    if found is None:
        artifact = (
            ModelArtifact.objects.filter(model_version_id=version.id)
            .values_list("data", flat=True)
            .first()
        )
        loaded = load_model(
            explainer=version.explainer,
            artifact=bytes(artifact) if artifact is not None else None,
            n_features=len(version.features),
            labels=version.labels,
        )
        found = _explainers[version.id] = build_explainer(loaded)
    return found


def encode_features(features: list[dict[str, Any]], rows: list[dict[str, Any]]) -> np.ndarray:
    """The model's input matrix: numbers as they are, booleans as 0/1, categories as
    their index in the declared category list (the encoding models are trained on)."""
    columns = []
    for spec in features:
        name = spec["name"]
        if spec["type"] == "categorical":
            index = {c: i for i, c in enumerate(spec["categories"])}
            columns.append([float(index[row[name]]) for row in rows])
        else:
            columns.append([float(row[name]) for row in rows])
    return np.asarray(columns, dtype=float).T.reshape(len(rows), len(features))


def explain_predictions(version: ModelVersion, predictions: list[Any]) -> list[RowExplanation]:
    """Explanations of predictions of one model version, in their order."""
    if version.explainer["kind"] == "precomputed":
        output = version.explainer.get("output", "probability")
        names = [f["name"] for f in version.features]
        return [
            precomputed_explanation(
                attributions=p.attributions,
                feature_names=names,
                model_output=precomputed_model_output(p.probabilities[p.label], output),
                output=output,
            )
            for p in predictions
        ]
    explainer = explainer_for(version)
    X = encode_features(version.features, [p.features for p in predictions])
    classes = [version.labels.index(p.label) for p in predictions]
    return explain_batch(explainer, X, classes)


def explanations_compute(*, item_ids: list[int]) -> tuple[list[int], str]:
    """Explain the items still waiting for it and make them claimable.

    Returns the ids that failed and the last error, for the caller to retry. Items
    already explained (or gone) are skipped: a redelivered batch changes nothing.
    """
    items = list(
        ReviewItem.objects.filter(
            id__in=item_ids, explanation_status=ExplanationStatus.PENDING
        ).select_related("prediction__model_version")
    )
    by_version: dict[int, list[ReviewItem]] = defaultdict(list)
    for item in items:
        by_version[item.prediction.model_version_id].append(item)

    done: list[tuple[ReviewItem, RowExplanation]] = []
    failed: list[int] = []
    error = ""
    for group in by_version.values():
        version = group[0].prediction.model_version
        try:
            rows = explain_predictions(version, [item.prediction for item in group])
        except Exception as exc:  # any failure of a model's batch: retried, then recorded
            failed += [item.id for item in group]
            error = f"{type(exc).__name__}: {exc}"[:2000]
            continue
        done += zip(group, rows, strict=True)
    _store(done, now=timezone.now())
    return failed, error


def _store(done: list[tuple[ReviewItem, RowExplanation]], *, now: datetime) -> None:
    if not done:
        return
    with transaction.atomic():
        Explanation.objects.bulk_create(
            [
                Explanation(
                    prediction_id=item.prediction_id,
                    method=row.method,
                    output=row.output,
                    base_value=row.base_value,
                    model_output=row.model_output,
                    contributions=row.contributions,
                    additivity_error=row.additivity_error,
                    seconds=row.seconds,
                    created_at=now,
                )
                for item, row in done
            ],
            ignore_conflicts=True,
        )
        _finish([item.id for item, _ in done], ExplanationStatus.READY, "", now)


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


def explanations_mark_failed(*, item_ids: list[int], error: str) -> int:
    """After the last retry: make the items claimable without an explanation."""
    return _finish(item_ids, ExplanationStatus.FAILED, error or "unknown error", timezone.now())


def explanations_due_for_sweep(*, now: datetime, grace_seconds: float, limit: int) -> list[int]:
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
