"""Helpers for the explanation tests: registration bodies for real models, their
predictions as a producer sends them, and the stored explanations of review items."""

import base64
from collections.abc import Sequence

import numpy as np

from apps.reviews.models import ReviewItem

MODELS = "/api/v1/models/"
PREDICTIONS = "/api/v1/predictions/"
CLAIM = "/api/v1/queue/claim/"
# Every prediction waits for a human: a top probability below 1.0 is low confidence,
# and the audit sample (rate 1.0) takes any that is certain.
ROUTE_ALL = {"min_confidence": 1.0, "audit_rate": 1.0, "queue": "fidelity"}


def numeric_features(names: Sequence[str], *, sensitive: Sequence[str] = ()) -> list[dict]:
    return [
        {"name": name, "type": "numeric", **({"sensitive": True} if name in sensitive else {})}
        for name in names
    ]


def feature_names(n: int) -> list[str]:
    return [f"f{i}" for i in range(n)]


def registration(
    *,
    name: str,
    labels: Sequence[str],
    features: list[dict],
    explainer: dict,
    artifact: bytes | None = None,
    version: str = "1",
    task: str | None = None,
    routing: dict | None = None,
) -> dict:
    """A registration body for POST /api/v1/models/ (JSON, artifact in base64)."""
    body = {
        "name": name,
        "version": version,
        "task": task
        or ("binary_classification" if len(labels) == 2 else "multiclass_classification"),
        "labels": list(labels),
        "features": features,
        "explainer": explainer,
        "routing": routing or ROUTE_ALL,
    }
    if artifact is not None:
        body["artifact"] = base64.b64encode(artifact).decode()
    return body


def prediction_items(
    *,
    model: str,
    rows: np.ndarray,
    probabilities: np.ndarray,
    labels: Sequence[str],
    names: Sequence[str],
    prefix: str = "row",
) -> list[dict]:
    """One prediction per row: the model's probabilities, its top class as the label."""
    items = []
    for i, (row, probs) in enumerate(zip(rows, probabilities, strict=True)):
        items.append(
            {
                "model": model,
                "external_id": f"{prefix}-{i}",
                "features": {name: float(x) for name, x in zip(names, row, strict=True)},
                "prediction": {
                    "label": labels[int(np.argmax(probs))],
                    "probabilities": {
                        label: float(p) for label, p in zip(labels, probs, strict=True)
                    },
                },
            }
        )
    return items


def binary_probabilities(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    return np.column_stack([1.0 - p, p])


def post_predictions(
    producer_client, capture_on_commit, items: list[dict], *, explain: bool = True
) -> list[int]:
    """Post predictions as the producer; the review item ids, in row order. With
    ``explain`` the work queued after commit runs (eagerly, in this process)."""
    if explain:
        with capture_on_commit(execute=True):
            r = producer_client.post(PREDICTIONS, {"items": items}, format="json")
    else:
        r = producer_client.post(PREDICTIONS, {"items": items}, format="json")
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["created"] == len(items), body
    assert all(answer["routed"] for answer in body["results"]), body
    return [answer["review_item"] for answer in body["results"]]


def stored_explanations(item_ids: list[int]) -> list:
    """The stored Explanation of each item's prediction, in the order of ``item_ids``."""
    items = ReviewItem.objects.filter(id__in=item_ids).select_related("prediction__explanation")
    by_id = {item.id: item.prediction.explanation for item in items}
    return [by_id[item_id] for item_id in item_ids]
