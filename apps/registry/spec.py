"""Validation of a model version's registration spec.

Every bad field is named by its dotted path (``features.2.categories``,
``routing.risk_rules.0.op``) so that a 400 tells the caller everything at once.
The artifact is checked for presence only; loading it is the explainer's business.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils.dateparse import parse_duration

from apps.core.invalid import Invalid
from apps.core.text import storable_text_error

from .models import ExplainerKind, Task
from .routing import Policy, PolicyError, parse_policy

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,49}$")
FEATURE_TYPES = ("numeric", "categorical", "boolean")
SPEC_KEYS = frozenset({"name", "version", "task", "labels", "features", "explainer", "routing"})
FEATURE_KEYS = frozenset({"name", "type", "categories", "sensitive"})
ARTIFACT_KINDS = frozenset({ExplainerKind.LIGHTGBM, ExplainerKind.XGBOOST, ExplainerKind.SKLEARN})
OUTPUT_SPACES = ("log_odds", "probability")
MAX_TEXT = 200


class SpecError(Invalid):
    """The registration is invalid, field by field."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    version: str
    task: str
    labels: list[str]
    features: list[dict[str, Any]]
    explainer: dict[str, Any]
    routing: dict[str, Any]
    policy: Policy


def iso_duration_seconds(text: str) -> float | None:
    """Seconds in an ISO 8601 duration (``PT4H``, ``P1DT30M``); None if it is not one."""
    if not text.startswith("P"):
        return None
    delta = parse_duration(text)
    return None if delta is None else delta.total_seconds()


def _text_error(value: Any, *, max_length: int = MAX_TEXT) -> str | None:
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if len(value) > max_length:
        return f"must be at most {max_length} characters"
    return storable_text_error(value)


def _finite(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    # An int of any size is finite; math.isfinite would overflow converting a huge one.
    return isinstance(value, int) or math.isfinite(value)


def _number_list_error(value: Any, length: int) -> str | None:
    if not isinstance(value, list) or len(value) != length or not all(map(_finite, value)):
        return f"must be a list of {length} finite numbers"
    return None


def validate_spec(raw: Any, *, has_artifact: bool) -> ModelSpec:
    """Check a registration spec; raise SpecError naming every bad field."""
    if not isinstance(raw, Mapping):
        raise SpecError({"non_field_errors": "the spec must be a JSON object"})
    errors: dict[str, str] = {}
    for key in sorted(set(raw) - SPEC_KEYS - {"artifact"}):
        errors[key] = "unknown field"

    name, version = raw.get("name"), raw.get("version")
    if not isinstance(name, str) or not NAME_RE.match(name):
        errors["name"] = "must be 1-100 letters, digits, '_', '.' or '-' (no ':')"
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)
    if not isinstance(version, str) or not VERSION_RE.match(version):  # type: ignore[unreachable]
        errors["version"] = "must be 1-50 letters, digits, '_', '.', '+' or '-' (no ':')"

    task = raw.get("task")
    if task not in Task.values:
        errors["task"] = f"must be one of {', '.join(Task.values)}"

    labels = raw.get("labels")
    if not isinstance(labels, list) or any(_text_error(v) for v in labels):
        errors["labels"] = "must be a list of non-empty strings"
    elif len(set(labels)) != len(labels):
        errors["labels"] = "must not repeat a label"
    elif task == Task.BINARY and len(labels) != 2:
        errors["labels"] = "a binary classifier has exactly 2 labels"
    elif task == Task.MULTICLASS and len(labels) < 2:
        errors["labels"] = "a multiclass classifier has at least 2 labels"
    n_classes = len(labels) if isinstance(labels, list) else 0

    features = _validate_features(raw.get("features"), errors)
    explainer = _validate_explainer(
        raw.get("explainer"),
        errors,
        n_features=len(features),
        n_classes=n_classes,
        task=task,
        has_artifact=has_artifact,
    )

    policy = None
    try:
        policy = parse_policy(
            raw.get("routing", {}),
            features={f["name"]: f for f in features},
            parse_duration=iso_duration_seconds,
            default_sla_seconds=float(settings.REVIEW_DEFAULT_SLA_SECONDS),
        )
    except PolicyError as exc:
        errors.update(exc.details)

    if errors or policy is None:
        raise SpecError(errors)
    return ModelSpec(
        name=name,  # type: ignore[arg-type]
        version=version,  # type: ignore[arg-type]
        task=task,  # type: ignore[arg-type]
        labels=list(labels),  # type: ignore[arg-type]
        features=features,
        explainer=explainer,
        routing=dict(raw.get("routing", {})),
        policy=policy,
    )


def _validate_features(raw: Any, errors: dict[str, str]) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        errors["features"] = "must be a non-empty list of features"
        return []
    features: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        path = f"features.{i}"
        if not isinstance(entry, Mapping):
            errors[path] = "must be an object with name and type"
            continue
        before = len(errors)
        for key in sorted(set(entry) - FEATURE_KEYS):
            errors[f"{path}.{key}"] = "unknown field"
        name, kind = entry.get("name"), entry.get("type")
        if message := _text_error(name):
            errors[f"{path}.name"] = message
        elif name in seen:
            errors[f"{path}.name"] = "repeats another feature's name"
        else:
            seen.add(name)  # type: ignore[arg-type]
        if kind not in FEATURE_TYPES:
            errors[f"{path}.type"] = f"must be one of {', '.join(FEATURE_TYPES)}"
        categories = entry.get("categories")
        if kind == "categorical":
            if (
                not isinstance(categories, list)
                or not categories
                or any(_text_error(c) for c in categories)
            ):
                errors[f"{path}.categories"] = "must be a non-empty list of strings"
            elif len(set(categories)) != len(categories):
                errors[f"{path}.categories"] = "must not repeat a category"
        elif categories is not None:
            errors[f"{path}.categories"] = "only categorical features have categories"
        sensitive = entry.get("sensitive", False)
        if not isinstance(sensitive, bool):
            errors[f"{path}.sensitive"] = "must be true or false"
        if len(errors) == before:
            feature = {"name": name, "type": kind, "sensitive": sensitive}
            if kind == "categorical":
                feature["categories"] = list(categories)  # type: ignore[arg-type]
            features.append(feature)
    return features


def _validate_explainer(
    raw: Any,
    errors: dict[str, str],
    *,
    n_features: int,
    n_classes: int,
    task: Any,
    has_artifact: bool,
) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        errors["explainer"] = "must be an object with a kind"
        return {}
    kind = raw.get("kind")
    if kind not in ExplainerKind.values:
        errors["explainer.kind"] = f"must be one of {', '.join(ExplainerKind.values)}"
        return {}
    allowed = {"kind"}
    if kind in ARTIFACT_KINDS:
        if not has_artifact:
            errors["artifact"] = f"a '{kind}' model needs its model file"
    elif has_artifact:
        errors["artifact"] = f"a '{kind}' explainer takes no model file"
    if kind == ExplainerKind.LINEAR:
        allowed |= {"coef", "intercept", "background_mean"}
        multiclass = task == Task.MULTICLASS
        coef, intercept = raw.get("coef"), raw.get("intercept")
        if multiclass:
            if (
                not isinstance(coef, list)
                or len(coef) != n_classes
                or any(_number_list_error(row, n_features) for row in coef)
            ):
                errors["explainer.coef"] = (
                    f"must be {n_classes} lists (one per label) of {n_features} numbers"
                )
            if message := _number_list_error(intercept, n_classes):
                errors["explainer.intercept"] = message
        else:
            if message := _number_list_error(coef, n_features):
                errors["explainer.coef"] = message
            if not _finite(intercept):
                errors["explainer.intercept"] = "must be a finite number"
        if message := _number_list_error(raw.get("background_mean"), n_features):
            errors["explainer.background_mean"] = message
    elif kind == ExplainerKind.PRECOMPUTED:
        allowed |= {"output", "tolerance"}
        if raw.get("output", "probability") not in OUTPUT_SPACES:
            errors["explainer.output"] = f"must be one of {', '.join(OUTPUT_SPACES)}"
        tolerance = raw.get("tolerance", 1e-6)
        if not _finite(tolerance) or not 0 < tolerance <= 1:
            errors["explainer.tolerance"] = "must be a number in (0, 1]"
    for key in sorted(set(raw) - allowed):
        errors[f"explainer.{key}"] = "unknown field"
    return dict(raw)
