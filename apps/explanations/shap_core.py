"""Exact SHAP explanations of a batch of rows. A pure module (no Django).

- Trees (LightGBM, XGBoost, scikit-learn ensembles): ``shap.TreeExplainer`` with its
  default path-dependent algorithm, which calls the libraries' own contribution
  routines: exact, and as fast as they are. Output: raw log-odds for boosted models;
  scikit-learn forests explain probabilities.
- Linear models: ``shap.LinearExplainer`` against the registered background mean;
  output: log-odds.
- Precomputed: the producer's attributions, checked for additivity at intake.
One row's explanation is for the predicted class when the model has one output per
class (multiclass), and for the model's single output otherwise (binary: the log-odds
of the second label). Every explanation records its additivity error:
|base value + sum of contributions - model output|.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from apps.registry.artifacts import LoadedModel


@dataclass(frozen=True)
class RowExplanation:
    method: str
    output: str
    base_value: float
    model_output: float
    contributions: list[float]  # in feature order
    additivity_error: float
    seconds: float


@dataclass
class Explainer:
    loaded: LoadedModel
    shap_explainer: Any
    method: str
    output: str


def build_explainer(loaded: LoadedModel) -> Explainer:
    """Build the SHAP explainer once per model version and process (20-200 ms)."""
    import shap

    if loaded.kind in ("lightgbm", "xgboost", "sklearn_tree"):
        explainer = shap.TreeExplainer(loaded.model)
        output = "probability" if explainer.model.tree_output == "probability" else "log_odds"
        return Explainer(loaded, explainer, "tree_shap", output)
    if loaded.kind == "linear":
        coef, intercept, mean = loaded.model
        masker = shap.maskers.Independent(mean.reshape(1, -1))
        return Explainer(
            loaded, shap.LinearExplainer((coef, intercept), masker), "linear_shap", "log_odds"
        )
    if loaded.kind == "sklearn_linear":
        model = loaded.model
        coef = model.coef_[0] if model.coef_.shape[0] == 1 else model.coef_
        intercept = model.intercept_[0] if model.intercept_.shape[0] == 1 else model.intercept_
        masker = shap.maskers.Independent(np.zeros((1, loaded.n_features)))
        return Explainer(
            loaded, shap.LinearExplainer((coef, intercept), masker), "linear_shap", "log_odds"
        )
    raise ValueError(f"no SHAP explainer for {loaded.kind}")


def _model_output(loaded: LoadedModel, X: np.ndarray) -> np.ndarray:
    """What the explanation must add up to: raw scores, shape (n,) or (n, classes)."""
    if loaded.kind == "lightgbm":
        return np.asarray(loaded.model.predict(X, raw_score=True))
    if loaded.kind == "xgboost":
        import xgboost

        return np.asarray(loaded.model.predict(xgboost.DMatrix(X), output_margin=True))
    if loaded.kind == "sklearn_tree":
        model = loaded.model
        if hasattr(model, "decision_function"):
            return np.asarray(model.decision_function(X))
        return np.asarray(model.predict_proba(X))
    if loaded.kind == "sklearn_linear":
        return np.asarray(loaded.model.decision_function(X))
    coef, intercept, _ = loaded.model
    return X @ coef.T + intercept


def explain_batch(explainer: Explainer, X: np.ndarray, classes: list[int]) -> list[RowExplanation]:
    """Explain every row of ``X``; ``classes`` holds each row's predicted class index."""
    started = time.perf_counter()
    with warnings.catch_warnings():
        # shap announces a change of layout for LightGBM binary models; handled below.
        warnings.filterwarnings("ignore", message=".*shap values output has changed.*")
        values = explainer.shap_explainer.shap_values(X)
    if isinstance(values, list):  # older layout: one array per class
        values = np.stack(values, axis=-1)
    values = np.asarray(values, dtype=float)
    base = np.asarray(explainer.shap_explainer.expected_value, dtype=float).reshape(-1)
    outputs = _model_output(explainer.loaded, X)
    per_row = (time.perf_counter() - started) / max(1, len(X))

    rows = []
    for i, predicted in enumerate(classes):
        if values.ndim == 3:  # one output per class: explain the predicted one
            contributions, base_value = values[i, :, predicted], base[predicted]
            model_output = float(np.asarray(outputs[i]).reshape(-1)[predicted])
        else:
            contributions, base_value = values[i], base[0]
            model_output = float(np.asarray(outputs[i]).reshape(-1)[0])
        error = abs(float(base_value) + float(np.sum(contributions)) - model_output)
        rows.append(
            RowExplanation(
                method=explainer.method,
                output=explainer.output,
                base_value=float(base_value),
                model_output=model_output,
                contributions=[float(c) for c in contributions],
                additivity_error=error,
                seconds=per_row,
            )
        )
    return rows


def precomputed_explanation(
    *, attributions: dict[str, Any], feature_names: list[str], model_output: float, output: str
) -> RowExplanation:
    """The producer's attributions as an explanation, with their additivity error."""
    contributions = [float(attributions["values"][name]) for name in feature_names]
    base_value = float(attributions["base_value"])
    return RowExplanation(
        method="precomputed",
        output=output,
        base_value=base_value,
        model_output=model_output,
        contributions=contributions,
        additivity_error=abs(base_value + sum(contributions) - model_output),
        seconds=0.0,
    )


def precomputed_model_output(probability: float, output: str) -> float:
    """The predicted label's probability in the declared output space."""
    if output == "probability":
        return probability
    p = min(max(probability, 1e-15), 1 - 1e-15)
    return float(np.log(p / (1 - p)))
