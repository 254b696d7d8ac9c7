"""One prediction of a request made ready to store: validated against its model
version's schema, routed by its policy, encoded and hashed.

What a model version compiles to (schema and policy) is built once per process:
versions are immutable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from apps.core.exceptions import NotFound, ValidationFailed
from apps.registry import routing
from apps.registry.models import ExplainerKind, ModelVersion
from apps.registry.spec import iso_duration_seconds

from .encoding import Encoded, content_digest
from .validation import CleanPrediction, InvalidPrediction, PredictionSchema


@dataclass(frozen=True)
class CompiledModel:
    """What intake needs of a model version, built once per process."""

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


@dataclass(slots=True)
class Candidate:
    """A valid prediction of the request, routed and ready to store."""

    version: ModelVersion
    clean: CleanPrediction
    decision: routing.Decision
    encoded: Encoded
    content_hash: str
    key: tuple[int, str]  # (model version id, external id): the unique key


def candidate_prepare(
    item: Any, versions: Mapping[str, ModelVersion], producer_id: int | None
) -> Candidate:
    """The request's ``item`` ready to store; an ApplicationError says why it is not."""
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
    encoded = Encoded.of(clean)
    return Candidate(
        version=version,
        clean=clean,
        decision=decision,
        encoded=encoded,
        content_hash=content_digest(
            producer_id=producer_id, model_version_id=version.id, encoded=encoded
        ),
        key=(version.id, clean.external_id),
    )
