"""Prediction intake: validate, route, store, and queue routed items for review.

A batch costs one round trip per table, whatever its size: one multi-row
``INSERT ... ON CONFLICT DO NOTHING RETURNING`` for the predictions (``sql``), one query
for the ones that were there already (only when there are any), one multi-row insert
for the review items (the reviews app's). The unique constraint on
``(model_version, external_id)`` makes intake idempotent under concurrency: of two
identical posts racing, one inserts and the other finds the first's row and answers
with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.core.exceptions import ApplicationError, Conflict
from apps.registry.selectors import model_versions_by_ref
from apps.reviews.services.items import NewItem, review_items_create

from .candidates import Candidate, candidate_prepare
from .models import Prediction
from .sql import predictions_insert_new


@dataclass
class Outcome:
    """The answer to one prediction of a request: created, duplicate, or an error."""

    answer: dict[str, Any] | None = None
    created: bool = False
    error: ApplicationError | None = None


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
    candidate: Candidate,
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
    candidates: dict[int, Candidate] = {}
    for index, item in enumerate(items):
        try:
            candidate = candidate_prepare(item, versions, producer_id)
        except ApplicationError as exc:
            outcomes[index].error = exc
            continue
        candidates[index] = candidate
        first.setdefault(candidate.key, index)

    unique = [candidates[i] for i in first.values()]
    with transaction.atomic():
        inserted = predictions_insert_new(unique, producer_id=producer_id, now=now)
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
