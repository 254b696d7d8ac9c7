"""What reviewers see of an explanation."""

from typing import Any

from apps.registry.models import feature_is_sensitive

SENSITIVE_ROW = "sensitive features"


def explanation_for_reviewer(
    *, explanation, features: list[dict[str, Any]], values: dict[str, Any]
) -> dict[str, Any]:
    """The explanation with sensitive features folded into one row (value hidden), so
    base value plus contributions still equals the model output; rows by size."""
    rows = []
    sensitive_total, has_sensitive = 0.0, False
    for spec, contribution in zip(features, explanation.contributions, strict=True):
        if feature_is_sensitive(spec):
            sensitive_total += contribution
            has_sensitive = True
        else:
            rows.append(
                {
                    "feature": spec["name"],
                    "value": values.get(spec["name"]),
                    "contribution": contribution,
                }
            )
    if has_sensitive:
        rows.append({"feature": SENSITIVE_ROW, "value": None, "contribution": sensitive_total})
    rows.sort(key=lambda row: abs(row["contribution"]), reverse=True)
    return {
        "method": explanation.method,
        "output": explanation.output,
        "base_value": explanation.base_value,
        "model_output": explanation.model_output,
        "additivity_error": explanation.additivity_error,
        "contributions": rows,
    }


def explained_label(*, method: str, output: str, labels: list[str], predicted: str) -> str:
    """The class an explanation is about (see shap_core): a binary model with one raw
    log-odds output (boosted trees, linear) is explained as the log-odds of its second
    label; otherwise, and for precomputed attributions, the predicted label is."""
    if method != "precomputed" and output == "log_odds" and len(labels) == 2:
        return labels[1]
    return predicted
