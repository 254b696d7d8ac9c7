"""Computing explanations of predictions and storing them.

The SHAP work runs outside any transaction, on plain rows; storing is one insert per
batch with ``ON CONFLICT DO NOTHING`` on the unique prediction, so a batch stored twice
keeps one explanation per prediction. Which predictions to explain, and moving their
review items on in the same statement, is the reviews app's
(``apps.reviews.services.explanations``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import numpy as np

from apps.registry.artifacts import load_model
from apps.registry.models import ModelArtifact, ModelVersion

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


class Explainable(Protocol):
    """What explaining a prediction reads of it."""

    @property
    def prediction_id(self) -> int: ...
    @property
    def features(self) -> dict[str, Any]: ...
    @property
    def label(self) -> str: ...
    @property
    def probabilities(self) -> dict[str, float]: ...
    @property
    def attributions(self) -> dict[str, Any] | None: ...


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


def _attributions_of(prediction: Explainable) -> dict[str, Any]:
    """A precomputed prediction's attributions (intake requires them for such models)."""
    if prediction.attributions is None:
        raise ValueError(f"prediction {prediction.prediction_id} carries no attributions")
    return prediction.attributions


def explain_predictions(
    version: ModelVersion, predictions: Sequence[Explainable]
) -> list[RowExplanation]:
    """Explanations of predictions of one model version, in their order."""
    if version.explainer["kind"] == "precomputed":
        output = version.explainer.get("output", "probability")
        names = [f["name"] for f in version.features]
        return [
            precomputed_explanation(
                attributions=_attributions_of(p),
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


def explanations_build(
    done: Sequence[tuple[Explainable, RowExplanation]], *, version: ModelVersion, now: datetime
) -> list[Explanation]:
    """Unsaved explanations of one version's predictions, each with the document the
    label feed serves (built once here, copied into every label)."""
    names = [f["name"] for f in version.features]
    return [
        Explanation(
            prediction_id=prediction.prediction_id,
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
                names=names,
                values=prediction.features,
            ),
        )
        for prediction, row in done
    ]


def explanations_insert(*, explanations: list[Explanation]) -> None:
    """Store explanations, skipping predictions that have one (the caller's transaction)."""
    Explanation.objects.bulk_create(explanations, ignore_conflicts=True)
