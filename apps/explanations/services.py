"""Computing and storing explanations for routed predictions, in batches.

The SHAP work runs outside any transaction; the writes that follow are one short
transaction per batch: explanations inserted with ``ON CONFLICT DO NOTHING`` on the
unique prediction, items moved on with a guarded update. Running a batch twice stores
one explanation per prediction and changes nothing the second time.

A run may take on more than its message named (``coalesce``): other waiting items of
the same model versions, reserved under ``SKIP LOCKED`` by stamping their
``explanation_requested_at``, so a backlog of small messages becomes one SHAP call
and one store, and the later messages find their items done. A reserved item whose
run dies waits for the sweeper, as an item whose message was lost does.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from apps.registry.artifacts import load_model
from apps.registry.models import ModelArtifact, ModelVersion
from apps.reviews.models import ExplanationStatus, ItemStatus, ReviewItem

from .documents import explanation_document
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


class _Waiting(NamedTuple):
    """What explaining one item needs of it and of its prediction."""

    id: int
    prediction_id: int
    model_version_id: int
    features: dict[str, Any]
    label: str
    probabilities: dict[str, float]
    attributions: dict[str, Any] | None


def explanations_compute(*, item_ids: list[int], coalesce: int = 0) -> tuple[list[int], str]:
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

    done: list[tuple[_Waiting, RowExplanation]] = []
    failed: list[int] = []
    error = ""
    for version_id, group in by_version.items():
        try:
            rows = explain_predictions(versions_by_id[version_id], group)
        except Exception as exc:  # any failure of a model's batch: retried, then recorded
            failed += [item.id for item in group]
            error = f"{type(exc).__name__}: {exc}"[:2000]
            continue
        done += zip(group, rows, strict=True)
    names = {vid: [f["name"] for f in version.features] for vid, version in versions_by_id.items()}
    _store(done, names=names, now=timezone.now())
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


def _store(
    done: list[tuple[_Waiting, RowExplanation]], *, names: dict[int, list[str]], now: datetime
) -> None:
    """Store the explanations (with the document the label feed serves), once each."""
    if not done:
        return
    explanations = [
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
            document=explanation_document(
                method=row.method,
                output=row.output,
                base_value=row.base_value,
                model_output=row.model_output,
                additivity_error=row.additivity_error,
                contributions=row.contributions,
                names=names[item.model_version_id],
                values=item.features,
            ),
        )
        for item, row in done
    ]
    item_ids = [item.id for item, _ in done]
    if connection.vendor == "postgresql":
        _store_in_one_statement(explanations, item_ids=item_ids, now=now)
        return
    with transaction.atomic():
        Explanation.objects.bulk_create(explanations, ignore_conflicts=True)
        _finish(item_ids, ExplanationStatus.READY, "", now)


# The explanation columns the store writes, with their SQL types.
_STORED = (
    ("prediction_id", "bigint"),
    ("method", "text"),
    ("output", "text"),
    ("base_value", "double precision"),
    ("model_output", "double precision"),
    ("contributions", "jsonb"),
    ("additivity_error", "double precision"),
    ("seconds", "double precision"),
    ("document", "text"),
)


def _store_in_one_statement(
    explanations: list[Explanation], *, item_ids: list[int], now: datetime
) -> None:
    """PostgreSQL: insert the explanations and move the items on in one statement.

    The rows travel as one JSON array, bound on the server (a batch is a megabyte of
    contributions and documents: bound on the client, psycopg would escape it into
    the SQL text and the server lex it back out, which cost as much as SHAP itself).
    ``ON CONFLICT DO NOTHING`` and the guarded update keep a second run a no-op; one
    statement is atomic by itself (no BEGIN and COMMIT round trips).
    """
    from django.db.backends.postgresql.base import ServerBindingCursor

    qn = connection.ops.quote_name
    columns = ", ".join(qn(name) for name, _ in _STORED)
    record = ", ".join(f"{qn(name)} {kind}" for name, kind in _STORED)
    sql = (
        f"WITH stored AS (INSERT INTO {qn(Explanation._meta.db_table)} "  # noqa: S608
        f"({columns}, created_at) SELECT {columns}, %s "
        f"FROM jsonb_to_recordset(%s::jsonb) AS r({record}) ON CONFLICT DO NOTHING) "
        f"UPDATE {qn(ReviewItem._meta.db_table)} SET explanation_status = %s, "
        f"explanation_error = '', updated_at = %s, "
        f"status = CASE WHEN status = %s THEN %s ELSE status END "
        f"WHERE id = ANY(%s) AND explanation_status = %s"
    )
    rows = json.dumps(
        [{name: getattr(e, name) for name, _ in _STORED} for e in explanations],
        allow_nan=False,
    )
    # Plain strings: psycopg would send an Enum member's name, not its value.
    ready, pending = str(ExplanationStatus.READY.value), str(ExplanationStatus.PENDING.value)
    item_pending, item_ready = str(ItemStatus.PENDING.value), str(ItemStatus.READY.value)
    params: list[Any] = [now, rows, ready, now, item_pending, item_ready, item_ids, pending]
    connection.ensure_connection()
    raw = ServerBindingCursor(connection.connection)  # type: ignore[call-arg]
    wrap = connection.make_debug_cursor if connection.queries_logged else connection.make_cursor
    with wrap(raw) as cursor:  # type: ignore[arg-type]
        cursor.execute(sql, params)


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
