"""Loading model artifacts without ever running code from them. A pure module.

Each kind has one loader that parses data, never code:
- ``lightgbm``: LightGBM's text model format (``Booster(model_str=...)``).
- ``xgboost``: XGBoost's JSON or UBJSON model format (``Booster.load_model``).
- ``sklearn``: a scikit-learn estimator saved with skops, loaded with an allowlist of
  types; anything outside it is refused before a single object is built.
- ``linear``: no artifact; the coefficients travel in the spec.
- ``precomputed``: no model at all; the producer sends the attributions.
A pickle is refused for every kind, whatever its file is called. A model whose feature
or class count differs from the registered spec is refused too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PICKLE_PROTOCOL_MARKER = b"\x80"
ZIP_MAGIC = b"PK\x03\x04"

# Types skops does not trust by default that our supported estimators need.
SKOPS_EXTRA_TRUSTED = frozenset({"sklearn.tree._tree.Tree"})
SKLEARN_TREE_MODELS = frozenset(
    {
        "sklearn.ensemble._gb.GradientBoostingClassifier",
        "sklearn.ensemble._forest.RandomForestClassifier",
        "sklearn.ensemble._forest.ExtraTreesClassifier",
        "sklearn.tree._classes.DecisionTreeClassifier",
    }
)
SKLEARN_LINEAR_MODELS = frozenset({"sklearn.linear_model._logistic.LogisticRegression"})


class ArtifactError(ValueError):
    """The artifact cannot be used; the message says why, for the 400 answer."""


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to be explained: the library object and what it computes."""

    kind: str  # lightgbm | xgboost | sklearn_tree | sklearn_linear | linear | precomputed
    model: Any
    n_features: int
    n_classes: int


def _qualified(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _refuse_pickle(data: bytes) -> None:
    if data[:1] == PICKLE_PROTOCOL_MARKER and len(data) > 1 and data[1] <= 5:
        raise ArtifactError("the file is a Python pickle; pickles are never loaded")


def _load_lightgbm(data: bytes) -> LoadedModel:
    import lightgbm

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ArtifactError("not a LightGBM text model (not UTF-8 text)") from exc
    if not text.startswith("tree"):
        raise ArtifactError("not a LightGBM text model (it must start with 'tree')")
    if "end of trees" not in text:
        raise ArtifactError("the LightGBM model is truncated (no 'end of trees')")
    try:
        booster = lightgbm.Booster(model_str=text)
    except Exception as exc:  # native errors may quote the file: never echo them
        raise ArtifactError("the LightGBM model does not load (malformed)") from exc
    per_iteration = booster.num_model_per_iteration()
    return LoadedModel(
        "lightgbm", booster, booster.num_feature(), 2 if per_iteration == 1 else per_iteration
    )


def _load_xgboost(data: bytes) -> LoadedModel:
    import json

    import xgboost

    if data.lstrip()[:1] != b"{":
        raise ArtifactError("not an XGBoost JSON or UBJSON model")
    booster = xgboost.Booster()
    try:
        booster.load_model(bytearray(data))
        config = json.loads(booster.save_config())
    except Exception as exc:  # native errors may quote the file: never echo them
        raise ArtifactError("the XGBoost model does not load (malformed or truncated)") from exc
    n_class = int(config["learner"]["learner_model_param"].get("num_class", "0"))
    return LoadedModel("xgboost", booster, booster.num_features(), max(2, n_class))


def _load_sklearn(data: bytes) -> LoadedModel:
    import skops.io

    if not data.startswith(ZIP_MAGIC):
        raise ArtifactError("not a skops file (a zip archive made by skops.io.dump)")
    try:
        untrusted = skops.io.get_untrusted_types(data=data)
    except Exception as exc:
        raise ArtifactError("not a readable skops file") from exc
    refused = sorted(set(untrusted) - SKOPS_EXTRA_TRUSTED)
    if refused:
        raise ArtifactError(f"the skops file holds types that are not trusted: {refused}")
    try:
        estimator = skops.io.loads(data, trusted=list(untrusted))
    except Exception as exc:
        raise ArtifactError("the skops file does not load (malformed)") from exc
    name = _qualified(estimator)
    if name in SKLEARN_TREE_MODELS:
        kind = "sklearn_tree"
    elif name in SKLEARN_LINEAR_MODELS:
        kind = "sklearn_linear"
    else:
        raise ArtifactError(f"{name} is not a supported scikit-learn classifier")
    return LoadedModel(kind, estimator, int(estimator.n_features_in_), len(estimator.classes_))


def _linear(explainer: dict[str, Any], n_classes: int) -> LoadedModel:
    coef = np.asarray(explainer["coef"], dtype=float)
    intercept = np.asarray(explainer["intercept"], dtype=float)
    mean = np.asarray(explainer["background_mean"], dtype=float)
    return LoadedModel("linear", (coef, intercept, mean), int(coef.shape[-1]), n_classes)


def load_model(
    *, explainer: dict[str, Any], artifact: bytes | None, n_features: int, labels: Sequence[str]
) -> LoadedModel:
    """Load and check a model; raise ArtifactError with the reason it cannot be used."""
    kind = explainer["kind"]
    n_classes = len(labels)
    if kind == "precomputed":
        return LoadedModel("precomputed", None, n_features, n_classes)
    if kind == "linear":
        return _linear(explainer, n_classes)
    if not artifact:
        raise ArtifactError("the model file is empty")
    _refuse_pickle(artifact)
    loader = {"lightgbm": _load_lightgbm, "xgboost": _load_xgboost, "sklearn": _load_sklearn}
    loaded = loader[kind](artifact)
    if loaded.n_features != n_features:
        raise ArtifactError(
            f"the model takes {loaded.n_features} features; the spec declares {n_features}"
        )
    if loaded.n_classes != n_classes:
        raise ArtifactError(
            f"the model has {loaded.n_classes} classes; the spec declares {n_classes} labels"
        )
    return loaded
