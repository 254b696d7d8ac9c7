"""An explanation as a training pipeline reads it: one JSON text, made once.

Explanations are written once and never change, so the label feed does not rebuild
this text for every label it serves: it is made when the explanation is stored
(``Explanation.document``) and spliced into each label as it is.
"""

import json
from collections.abc import Sequence
from typing import Any

_compact = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def explanation_document(
    *,
    method: str,
    output: str,
    base_value: float,
    model_output: float,
    additivity_error: float,
    contributions: Sequence[float],
    names: Sequence[str],
    values: dict[str, Any],
) -> str:
    """Every feature's contribution, with its value, largest |contribution| first."""
    ranked = sorted(
        zip(contributions, names, strict=True), key=lambda pair: abs(pair[0]), reverse=True
    )
    return _compact(
        {
            "method": method,
            "output": output,
            "base_value": base_value,
            "model_output": model_output,
            "additivity_error": additivity_error,
            "contributions": [
                {"feature": name, "value": values.get(name), "contribution": contribution}
                for contribution, name in ranked
            ],
        }
    )
