"""Prediction intake: validate, route, store, and queue routed items for review.

A batch costs one round trip per table, whatever its size: one multi-row
``INSERT ... ON CONFLICT DO NOTHING RETURNING`` for the predictions, one query for the
ones that were there already (only when there are any), one multi-row insert for the
review items. The unique constraint on ``(model_version, external_id)`` makes intake
idempotent under concurrency: of two identical posts racing, one inserts and the other
finds the first's row and answers with it.

On PostgreSQL the predictions travel as one JSON array that ``jsonb_to_recordset``
expands: one bound parameter instead of thirteen per row, which the server parses in
one pass (quoting and parsing a 13,000-parameter VALUES list cost four times as much;
see docs/performance.md). Each JSON part of a prediction is encoded once, and the same
text serves the content hash and the insert. Other databases (SQLite, the embedded
default) get the portable multi-row VALUES statement.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from django.db import connection, transaction
from django.db.models import Field, Q
from django.utils import timezone

from apps.core.exceptions import ApplicationError, Conflict, NotFound, ValidationFailed
from apps.registry import routing
from apps.registry.models import ExplainerKind, ModelVersion
from apps.registry.selectors import model_versions_by_ref
from apps.registry.spec import iso_duration_seconds
from apps.reviews.services.items import NewItem, review_items_create

from .models import Prediction
from .validation import CleanPrediction, InvalidPrediction, PredictionSchema


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
                attribution_output=version.explainer.get("output", "probability"),
                attribution_tolerance=version.explainer.get("tolerance", 1e-6),
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


# The canonical text of the content hash: sorted keys, no spaces, non-ASCII as is.
_canonical_json = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


@dataclass(frozen=True, slots=True)
class _Encoded:
    """The canonical JSON text of a clean prediction's parts, encoded once."""

    features: str
    context: str
    label: str
    probabilities: str
    attributions: str

    @classmethod
    def of(cls, clean: CleanPrediction) -> _Encoded:
        return cls(
            features=_canonical_json(clean.features),
            context=_canonical_json(clean.context),
            label=_canonical_json(clean.label),
            probabilities=_canonical_json(clean.probabilities),
            attributions=_canonical_json(clean.attributions),
        )


def _digest(*, producer_id: int | None, model_version_id: int, encoded: _Encoded) -> str:
    # Byte for byte ``json.dumps(payload, sort_keys=True, separators=(",", ":"),
    # ensure_ascii=False)`` of the payload below, assembled from parts already encoded:
    # the keys are written in sorted order. Stored hashes depend on this text.
    producer = "null" if producer_id is None else int(producer_id)
    text = (
        f'{{"attributions":{encoded.attributions},"context":{encoded.context},'
        f'"features":{encoded.features},"label":{encoded.label},'
        f'"model":{int(model_version_id)},"probabilities":{encoded.probabilities},'
        f'"producer":{producer}}}'
    )
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(slots=True)
class _Candidate:
    """A valid prediction of the request, routed and ready to store."""

    version: ModelVersion
    clean: CleanPrediction
    decision: routing.Decision
    encoded: _Encoded
    content_hash: str
    key: tuple[int, str]  # (model version id, external id): the unique key


def _prepare(
    item: Any, versions: Mapping[str, ModelVersion], producer_id: int | None
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
    encoded = _Encoded.of(clean)
    return _Candidate(
        version=version,
        clean=clean,
        decision=decision,
        encoded=encoded,
        content_hash=_digest(producer_id=producer_id, model_version_id=version.id, encoded=encoded),
        key=(version.id, clean.external_id),
    )


# The columns intake writes, and each candidate's row in the same order, as Python
# values (portable insert) and as a JSON object (PostgreSQL insert).
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


def _row_values(c: _Candidate, producer_id: int | None, now: datetime) -> tuple[Any, ...]:
    return (
        c.version.id,
        c.clean.external_id,
        c.content_hash,
        producer_id,
        c.clean.features,
        c.clean.context,
        c.clean.label,
        c.clean.probabilities,
        c.clean.attributions,
        c.decision.routed,
        list(c.decision.reasons),
        c.decision.selection_probability,
        now,
    )


_ROW_JSON = "{" + ",".join(f'"{f.column}":%s' for f in _INSERT_FIELDS) + "}"


def _row_json(c: _Candidate, producer_json: str, now_json: str) -> str:
    return _ROW_JSON % (
        c.version.id,
        _canonical_json(c.clean.external_id),
        _canonical_json(c.content_hash),
        producer_json,
        c.encoded.features,
        c.encoded.context,
        c.encoded.label,
        c.encoded.probabilities,
        c.encoded.attributions,
        "true" if c.decision.routed else "false",
        _canonical_json(c.decision.reasons),
        _canonical_json(c.decision.selection_probability),
        now_json,
    )


def _column(field: Field) -> str:
    return connection.ops.quote_name(field.column or field.name)


def _prediction_insert_sql(source: str) -> str:
    qn = connection.ops.quote_name
    columns = ", ".join(_column(f) for f in _INSERT_FIELDS)
    # Only identifiers from the model's own metadata are formatted in; values are bound.
    return (
        f"INSERT INTO {qn(Prediction._meta.db_table)} ({columns}) {source} "
        f"ON CONFLICT ({qn('model_version_id')}, {qn('external_id')}) DO NOTHING "
        f"RETURNING {qn('id')}, {qn('model_version_id')}, {qn('external_id')}"
    )


def _from_recordset(fields: Sequence[Field]) -> str:
    """``SELECT <columns> FROM`` the rows of one JSON array parameter, typed as the
    columns are."""
    columns = ", ".join(_column(f) for f in fields)
    record = ", ".join(f"{_column(f)} {f.db_type(connection)}" for f in fields)
    return f"SELECT {columns} FROM jsonb_to_recordset(%s::jsonb) AS r({record})"  # noqa: S608


@cache
def _recordset_insert_sql() -> str:
    return _prediction_insert_sql(_from_recordset(_INSERT_FIELDS))


def _insert_new(
    candidates: Sequence[_Candidate], producer_id: int | None, now: datetime
) -> dict[tuple[int, str], int]:
    """Insert the predictions not stored yet, in one statement; their ids by key."""
    if not candidates:
        return {}
    if connection.vendor == "postgresql":
        producer_json = "null" if producer_id is None else str(int(producer_id))
        now_json = _canonical_json(now.isoformat())
        rows = ",".join([_row_json(c, producer_json, now_json) for c in candidates])
        sql, params = _recordset_insert_sql(), [f"[{rows}]"]
        cursor = _server_binding_cursor()
    else:
        row = "(" + ", ".join(["%s"] * len(_INSERT_FIELDS)) + ")"
        sql = _prediction_insert_sql(f"VALUES {', '.join([row] * len(candidates))}")
        params = [
            f.get_db_prep_save(value, connection)
            for c in candidates
            for f, value in zip(_INSERT_FIELDS, _row_values(c, producer_id, now), strict=True)
        ]
        cursor = connection.cursor()
    with cursor:
        cursor.execute(sql, params)
        return {(mv, ext): pk for pk, mv, ext in cursor.fetchall()}


def _server_binding_cursor() -> Any:
    """A Django cursor on PostgreSQL that sends parameters apart from the statement.

    Django's cursors bind on the client: the megabyte of JSON would be escaped into
    the SQL text and lexed back out by the server, which costs more than parsing it.
    Wrapped as Django wraps its own cursors, so query logging, ``assertNumQueries`` and
    execute wrappers see the statement. Statements are not prepared (Django's
    connections have ``prepare_threshold`` None).
    """
    from django.db.backends.postgresql.base import ServerBindingCursor

    connection.ensure_connection()
    raw = ServerBindingCursor(connection.connection)  # type: ignore[call-arg]
    if connection.queries_logged:
        return connection.make_debug_cursor(raw)  # type: ignore[arg-type]
    return connection.make_cursor(raw)  # type: ignore[arg-type]


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
        "external_id": candidate.clean.external_id,
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
            candidate = _prepare(item, versions, producer_id)
        except ApplicationError as exc:
            outcomes[index].error = exc
            continue
        candidates[index] = candidate
        first.setdefault(candidate.key, index)

    unique = [candidates[i] for i in first.values()]
    with transaction.atomic():
        inserted = _insert_new(unique, producer_id, now)
        stored = _stored([c.key for c in unique if c.key not in inserted])
        routed = [c for c in unique if c.key in inserted and c.decision.routed]
        created = review_items_create(
            items=[
                NewItem(
                    prediction_id=inserted[c.key],
                    queue_id=c.version.queue_id,
                    reasons=c.decision.reasons,
                    priority=c.decision.priority,
                    sla_seconds=c.decision.sla_seconds,
                )
                for c in routed
            ],
            producer=producer,
            now=now,
        )
        item_ids = {c.key: item_id for c, item_id in zip(routed, created, strict=True)}

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
                "content_hash": original_candidate.content_hash,
                "routed": original_candidate.decision.routed,
                "reasons": list(original_candidate.decision.reasons),
                "review_item__id": item_ids.get(key),
            }
        if original["content_hash"] != candidate.content_hash:
            outcomes[index].error = Conflict(
                f"Prediction {candidate.clean.external_id!r} of model "
                f"{candidate.version.ref} was already received with different content.",
                code="duplicate_external_id",
                details={
                    "external_id": candidate.clean.external_id,
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
