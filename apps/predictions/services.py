"""Prediction intake: validate, route, store, and queue routed items for review.

A batch costs one round trip per table, whatever its size: one multi-row
``INSERT ... ON CONFLICT DO NOTHING RETURNING`` for the predictions, one query for the
ones that were there already (only when there are any), one multi-row insert for the
review items. The unique constraint on ``(model_version, external_id)`` makes intake
idempotent under concurrency: of two identical posts racing, one inserts and the other
finds the first's row and answers with it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.db import connection, transaction
from django.db.models import Field, Q
from django.utils import timezone

from apps.core.exceptions import ApplicationError, Conflict, NotFound, ValidationFailed
from apps.registry.models import ExplainerKind, ModelVersion
from apps.registry.selectors import model_versions_by_ref
from apps.registry.spec import iso_duration_seconds
from apps.reviews.models import ReviewItem
from apps.reviews.tasks import enqueue_explanations

from . import routing
from .models import Prediction
from .validation import InvalidPrediction, PredictionSchema


@dataclass(frozen=True)
class CompiledModel:
    """What intake needs of a model version, built once per process (versions are
    immutable)."""

    schema: PredictionSchema
    policy: routing.Policy


_compiled: dict[int, CompiledModel] = {}


def compiled_model(version: ModelVersion) -> CompiledModel:
    found = _compiled.get(version.id)
    if found is None:
        found = CompiledModel(
            schema=PredictionSchema(
                labels=version.labels,
                features=version.features,
                requires_attributions=version.explainer.get("kind") == ExplainerKind.PRECOMPUTED,
            ),
            policy=routing.parse_policy(
                version.routing,
                features={f["name"]: f for f in version.features},
                parse_duration=iso_duration_seconds,
            ),
        )
        _compiled[version.id] = found
    return found


@dataclass
class Outcome:
    """The answer to one prediction of a request: created, duplicate, or an error."""

    answer: dict[str, Any] | None = None
    created: bool = False
    error: ApplicationError | None = None


@dataclass
class _Candidate:
    version: ModelVersion
    fields: dict[str, Any]
    decision: routing.Decision

    @property
    def key(self) -> tuple[int, str]:
        return (self.version.id, self.fields["external_id"])


def content_hash(*, producer_id: int | None, model_version_id: int, clean: Any) -> str:
    """A digest of everything that makes two sends of one prediction the same."""
    payload = {
        "producer": producer_id,
        "model": model_version_id,
        "features": clean.features,
        "context": clean.context,
        "label": clean.label,
        "probabilities": clean.probabilities,
        "attributions": clean.attributions,
    }
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode()).hexdigest()


def _prepare(
    item: Any, versions: Mapping[str, ModelVersion], producer_id: int | None, now: datetime
) -> _Candidate:
    if not isinstance(item, Mapping):
        raise ValidationFailed("A prediction must be a JSON object.")
    ref = item.get("model")
    if isinstance(ref, int) and not isinstance(ref, bool):
        ref = str(ref)
    if not isinstance(ref, str) or not ref:
        raise ValidationFailed(
            "The prediction names no model.", details={"model": "required: id or name:version"}
        )
    version = versions.get(ref)
    if version is None:
        raise NotFound(f"No model {ref!r}.", code="model_not_found", details={"model": ref})
    compiled = compiled_model(version)
    try:
        clean = compiled.schema.clean(item)
    except InvalidPrediction as exc:
        raise ValidationFailed("The prediction is invalid.", details=exc.details) from exc
    decision = routing.route(
        compiled.policy,
        model_key=version.ref,
        external_id=clean.external_id,
        features=clean.features,
        context=clean.context,
        probabilities=clean.probabilities,
    )
    return _Candidate(
        version=version,
        decision=decision,
        fields={
            "model_version": version.id,
            "external_id": clean.external_id,
            "content_hash": content_hash(
                producer_id=producer_id, model_version_id=version.id, clean=clean
            ),
            "producer": producer_id,
            "features": clean.features,
            "context": clean.context,
            "label": clean.label,
            "probabilities": clean.probabilities,
            "attributions": clean.attributions,
            "routed": decision.routed,
            "reasons": list(decision.reasons),
            "selection_probability": decision.selection_probability,
            "created_at": now,
        },
    )


_INSERT_FIELDS: list[Field] = [
    Prediction._meta.get_field(name)  # type: ignore[misc]
    for name in (
        "model_version",
        "external_id",
        "content_hash",
        "producer",
        "features",
        "context",
        "label",
        "probabilities",
        "attributions",
        "routed",
        "reasons",
        "selection_probability",
        "created_at",
    )
]


def _insert_new(candidates: Sequence[_Candidate]) -> dict[tuple[int, str], int]:
    """Insert the predictions not stored yet, in one statement; their ids by key."""
    if not candidates:
        return {}
    qn = connection.ops.quote_name
    table = qn(Prediction._meta.db_table)
    columns = ", ".join(qn(f.column) for f in _INSERT_FIELDS)  # type: ignore[arg-type]
    row = "(" + ", ".join(["%s"] * len(_INSERT_FIELDS)) + ")"
    params = [
        f.get_db_prep_save(c.fields[f.name], connection) for c in candidates for f in _INSERT_FIELDS
    ]
    # Only identifiers from the model's own metadata are formatted in; values are bound.
    sql = (
        f"INSERT INTO {table} ({columns}) VALUES {', '.join([row] * len(candidates))} "  # noqa: S608
        f"ON CONFLICT ({qn('model_version_id')}, {qn('external_id')}) DO NOTHING "
        f"RETURNING {qn('id')}, {qn('model_version_id')}, {qn('external_id')}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {(mv, ext): pk for pk, mv, ext in cursor.fetchall()}


def _stored(keys: Sequence[tuple[int, str]]) -> dict[tuple[int, str], dict[str, Any]]:
    """Predictions already stored under these keys, with their review item id."""
    if not keys:
        return {}
    condition = Q(pk__in=[])
    by_version: dict[int, list[str]] = {}
    for version_id, external_id in keys:
        by_version.setdefault(version_id, []).append(external_id)
    for version_id, external_ids in by_version.items():
        condition |= Q(model_version_id=version_id, external_id__in=external_ids)
    rows = Prediction.objects.filter(condition).values(
        "id",
        "model_version_id",
        "external_id",
        "content_hash",
        "routed",
        "reasons",
        "review_item__id",
    )
    return {(r["model_version_id"], r["external_id"]): dict(r) for r in rows}


def _answer(
    *,
    prediction_id: int,
    candidate: _Candidate,
    routed: bool,
    reasons: list[str],
    review_item_id: int | None,
) -> dict[str, Any]:
    return {
        "id": prediction_id,
        "external_id": candidate.fields["external_id"],
        "model": candidate.version.ref,
        "status": "pending_review" if routed else "auto_accepted",
        "routed": routed,
        "reasons": reasons,
        "review_item": review_item_id,
    }


def predictions_ingest(*, producer, items: Sequence[Any]) -> list[Outcome]:
    """Validate, route and store a batch of predictions; one Outcome per item, in order.

    Bad items are answered with their error and do not stop the good ones. A resend
    with the same content gets the first answer back; with other content, a 409.
    Routed predictions get a review item, and explanation work is queued after commit.
    """
    now = timezone.now()
    producer_id = producer.id if producer is not None else None
    refs = {
        str(item["model"])
        for item in items
        if isinstance(item, Mapping) and isinstance(item.get("model"), str | int)
    }
    versions = model_versions_by_ref(refs=refs)

    outcomes = [Outcome() for _ in items]
    first: dict[tuple[int, str], int] = {}  # key -> index of its first occurrence
    candidates: dict[int, _Candidate] = {}
    for index, item in enumerate(items):
        try:
            candidate = _prepare(item, versions, producer_id, now)
        except ApplicationError as exc:
            outcomes[index].error = exc
            continue
        candidates[index] = candidate
        first.setdefault(candidate.key, index)

    unique = [candidates[i] for i in first.values()]
    with transaction.atomic():
        inserted = _insert_new(unique)
        stored = _stored([c.key for c in unique if c.key not in inserted])
        routed = [c for c in unique if c.key in inserted and c.decision.routed]
        review_items = ReviewItem.objects.bulk_create(
            [
                ReviewItem(
                    prediction_id=inserted[c.key],
                    queue_id=c.version.queue_id,
                    reasons=list(c.decision.reasons),
                    priority=c.decision.priority,
                    due_at=now + timedelta(seconds=c.decision.sla_seconds or 0),
                )
                for c in routed
            ]
        )
        item_ids = {c.key: item.id for c, item in zip(routed, review_items, strict=True)}
        if item_ids:
            transaction.on_commit(
                partial(enqueue_explanations, item_ids=list(item_ids.values())), robust=True
            )

    for index, candidate in candidates.items():
        key = candidate.key
        if key in inserted and first[key] == index:
            outcomes[index].created = True
            outcomes[index].answer = _answer(
                prediction_id=inserted[key],
                candidate=candidate,
                routed=candidate.decision.routed,
                reasons=list(candidate.decision.reasons),
                review_item_id=item_ids.get(key),
            )
            continue
        original = stored.get(key)
        if original is None and key not in inserted:
            # Neither inserted nor found: the other writer's row vanished in between.
            outcomes[index].error = Conflict(
                "The prediction changed concurrently; send it again.", code="retry"
            )
            continue
        if original is None:  # a repeat, within this batch, of a prediction it created
            original_candidate = candidates[first[key]]
            original = {
                "id": inserted[key],
                "content_hash": original_candidate.fields["content_hash"],
                "routed": original_candidate.decision.routed,
                "reasons": list(original_candidate.decision.reasons),
                "review_item__id": item_ids.get(key),
            }
        if original["content_hash"] != candidate.fields["content_hash"]:
            outcomes[index].error = Conflict(
                f"Prediction {candidate.fields['external_id']!r} of model "
                f"{candidate.version.ref} was already received with different content.",
                code="duplicate_external_id",
                details={
                    "external_id": candidate.fields["external_id"],
                    "prediction_id": original["id"],
                },
            )
            continue
        outcomes[index].answer = _answer(
            prediction_id=original["id"],
            candidate=candidate,
            routed=original["routed"],
            reasons=original["reasons"],
            review_item_id=original["review_item__id"],
        )
    return outcomes
