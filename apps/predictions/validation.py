"""Validation of a prediction against its model's schema. A pure module.

A schema is compiled once per model version and then checks each prediction in a
single pass, naming every bad field by its dotted path (``features.income``,
``prediction.probabilities.deny``). What it accepts can be stored as JSON in
PostgreSQL as it is: finite numbers only, no NUL characters, bounded depth.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from apps.core.invalid import Invalid
from apps.core.text import storable_text_error

PROBABILITY_TOLERANCE = 1e-6
MAX_EXTERNAL_ID_LENGTH = 200
MAX_CONTEXT_DEPTH = 16
TOP_LEVEL_KEYS = frozenset(
    {"model", "external_id", "features", "prediction", "context", "attributions"}
)


class InvalidPrediction(Invalid):
    """The prediction does not fit its model's schema, field by field."""


@dataclass(frozen=True)
class CleanPrediction:
    external_id: str
    features: dict[str, Any]
    context: dict[str, Any]
    label: str
    probabilities: dict[str, float]
    attributions: dict[str, Any] | None


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def as_finite_float(value: Any) -> float | None:
    """``value`` as a float if it is a finite JSON number (not a boolean), else None."""
    if not is_number(value):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def json_safety_errors(value: Any, path: str, errors: dict[str, str], depth: int = 0) -> None:
    """Record why ``value`` cannot be stored as JSON: non-finite numbers, NUL, depth."""
    if depth > MAX_CONTEXT_DEPTH:
        errors[path] = f"nested deeper than {MAX_CONTEXT_DEPTH} levels"
    elif isinstance(value, float) and not math.isfinite(value):
        errors[path] = "must be a finite number (no NaN or infinity)"
    elif isinstance(value, str):
        if message := storable_text_error(value):
            errors[path] = message
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if storable_text_error(key):
                errors[path] = "keys must be valid Unicode without NUL characters"
                continue
            json_safety_errors(item, f"{path}.{key}", errors, depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            json_safety_errors(item, f"{path}.{i}", errors, depth + 1)


class PredictionSchema:
    """The checks for one model version, compiled from its registered spec."""

    def __init__(
        self,
        *,
        labels: Sequence[str],
        features: Sequence[Mapping[str, Any]],
        requires_attributions: bool,
        attribution_output: str = "probability",
        attribution_tolerance: float = 1e-6,
    ) -> None:
        self.labels = tuple(labels)
        self.label_set = frozenset(labels)
        self.features = {f["name"]: f for f in features}
        self.numeric = frozenset(
            name for name, f in self.features.items() if f["type"] == "numeric"
        )
        self.categories = {
            f["name"]: frozenset(f["categories"]) for f in features if f["type"] == "categorical"
        }
        self.requires_attributions = requires_attributions
        self.attribution_output = attribution_output
        self.attribution_tolerance = attribution_tolerance

    def clean(self, item: Any) -> CleanPrediction:
        """Validate one prediction; raise InvalidPrediction naming every bad field."""
        if not isinstance(item, Mapping):
            raise InvalidPrediction({"non_field_errors": "a prediction must be a JSON object"})
        errors: dict[str, str] = {}
        if not TOP_LEVEL_KEYS.issuperset(item):
            for key in sorted(set(item) - TOP_LEVEL_KEYS):
                errors[key] = "unknown field"

        external_id = item.get("external_id")
        if not isinstance(external_id, str) or not external_id.strip():
            errors["external_id"] = "must be a non-empty string"
        elif len(external_id) > MAX_EXTERNAL_ID_LENGTH:
            errors["external_id"] = f"must be at most {MAX_EXTERNAL_ID_LENGTH} characters"
        elif message := storable_text_error(external_id):
            errors["external_id"] = message

        features = self._clean_features(item.get("features"), errors)
        label, probabilities = self._clean_prediction(item.get("prediction"), errors)

        context = item.get("context")
        if context is None:
            context = {}
        elif not isinstance(context, Mapping):
            errors["context"] = "must be an object"
        else:
            json_safety_errors(context, "context", errors)

        attributions = self._clean_attributions(item.get("attributions"), errors)
        if not errors and attributions is not None:
            self._check_additivity(attributions, probabilities[label], errors)
        if errors:
            raise InvalidPrediction(errors)
        return CleanPrediction(
            external_id=external_id,  # type: ignore[arg-type]
            features=features,
            context=dict(context),  # type: ignore[arg-type]
            label=label,  # type: ignore[arg-type]
            probabilities=probabilities,
            attributions=attributions,
        )

    def _clean_features(self, raw: Any, errors: dict[str, str]) -> dict[str, Any]:
        if not isinstance(raw, Mapping):
            errors["features"] = "must be an object of feature values"
            return {}
        clean: dict[str, Any] = {}
        numeric = self.numeric
        for name, value in raw.items():
            # The common case first, cheaply: a finite float for a numeric feature
            # (``x - x`` is NaN for infinities and NaN).
            if type(value) is float and value - value == 0.0 and name in numeric:
                clean[name] = value
                continue
            spec = self.features.get(name)
            path = f"features.{name}"
            if spec is None:
                errors[path] = "unknown feature"
                continue
            kind = spec["type"]
            if kind == "numeric":
                number = as_finite_float(value)
                if number is None:
                    errors[path] = (
                        "must be a finite number (no NaN or infinity)"
                        if isinstance(value, float)
                        else "must be a number"
                    )
                else:
                    clean[name] = number
            elif kind == "categorical":
                if not isinstance(value, str):
                    errors[path] = "must be a string category"
                elif value not in self.categories[name]:
                    errors[path] = f"unknown category {value!r}"
                else:
                    clean[name] = value
            elif not isinstance(value, bool):
                errors[path] = "must be true or false"
            else:
                clean[name] = value
        if len(clean) < len(self.features):  # else every feature is there, and valid
            for name in self.features:
                if name not in raw:
                    errors[f"features.{name}"] = "missing"
        # Keep the schema's order: it is the model's input order.
        return {name: clean[name] for name in self.features if name in clean}

    def _clean_prediction(self, raw: Any, errors: dict[str, str]) -> tuple[Any, dict[str, float]]:
        if not isinstance(raw, Mapping):
            errors["prediction"] = "must be an object with label and probabilities"
            return None, {}
        for key in sorted(set(raw) - {"label", "probabilities"}):
            errors[f"prediction.{key}"] = "unknown field"
        label = raw.get("label")
        if not isinstance(label, str) or label not in self.label_set:
            errors["prediction.label"] = f"must be one of {list(self.labels)!r}"
        probabilities = raw.get("probabilities")
        if not isinstance(probabilities, Mapping):
            errors["prediction.probabilities"] = "must be an object of probability by label"
            return label, {}
        clean: dict[str, float] = {}
        for name, value in probabilities.items():
            path = f"prediction.probabilities.{name}"
            number = as_finite_float(value)
            if name not in self.label_set:
                errors[path] = "unknown label"
            elif number is None or not 0.0 <= number <= 1.0:
                errors[path] = "must be a number between 0 and 1"
            else:
                clean[name] = number
        for name in self.labels:
            if name not in probabilities:
                errors[f"prediction.probabilities.{name}"] = "missing"
        if len(clean) == len(self.labels) and abs(math.fsum(clean.values()) - 1.0) > (
            PROBABILITY_TOLERANCE
        ):
            errors["prediction.probabilities"] = (
                f"must sum to 1 within {PROBABILITY_TOLERANCE:g} "
                f"(they sum to {math.fsum(clean.values())!r})"
            )
        return label, {name: clean[name] for name in self.labels if name in clean}

    def _clean_attributions(self, raw: Any, errors: dict[str, str]) -> dict[str, Any] | None:
        if raw is None:
            if self.requires_attributions:
                errors["attributions"] = "required: the model's explainer is 'precomputed'"
            return None
        if not self.requires_attributions:
            errors["attributions"] = "only accepted for models whose explainer is 'precomputed'"
            return None
        if not isinstance(raw, Mapping):
            errors["attributions"] = "must be an object with base_value and values"
            return None
        for key in sorted(set(raw) - {"base_value", "values"}):
            errors[f"attributions.{key}"] = "unknown field"
        base_value = as_finite_float(raw.get("base_value"))
        if base_value is None:
            errors["attributions.base_value"] = "must be a finite number"
        values = raw.get("values")
        if not isinstance(values, Mapping):
            errors["attributions.values"] = "must be an object of contribution by feature"
            return None
        clean: dict[str, float] = {}
        for name, value in values.items():
            number = as_finite_float(value)
            if name not in self.features:
                errors[f"attributions.values.{name}"] = "unknown feature"
            elif number is None:
                errors[f"attributions.values.{name}"] = "must be a finite number"
            else:
                clean[name] = number
        for name in self.features:
            if name not in values:
                errors[f"attributions.values.{name}"] = "missing"
        return {"base_value": base_value, "values": clean}

    def _check_additivity(
        self, attributions: dict[str, Any], probability: float, errors: dict[str, str]
    ) -> None:
        """Precomputed attributions must add up to the model output they explain: the
        predicted label's probability, in the declared output space."""
        if self.attribution_output == "probability":
            output = probability
        else:
            p = min(max(probability, 1e-15), 1 - 1e-15)
            output = math.log(p / (1 - p))
        total = attributions["base_value"] + math.fsum(attributions["values"].values())
        if abs(total - output) > self.attribution_tolerance:
            errors["attributions"] = (
                f"base_value plus values is {total!r}, but the model output "
                f"({self.attribution_output} of the predicted label) is {output!r}; they "
                f"must agree within {self.attribution_tolerance:g}"
            )
