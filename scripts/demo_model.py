"""The demo's model recipe, once: the data, the LightGBM training, the registration spec,
the routing policy and the predictions as a model server sends them.

``manage.py demo_setup`` (model ``breast-cancer``) and the retraining pipeline in
``scripts/retrain_demo.py`` (its own lineage, ``breast-cancer-retrain``) both use it.
Plain Python, nothing of the server, so that the pipeline stays a client; ``scripts``
is no package, so both load this file by its path.

Training is deterministic (fixed seed, one thread, LightGBM's deterministic mode):
the same rows give the same model file, which reruns of both demos depend on.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import lightgbm
import numpy as np
from sklearn.datasets import load_breast_cancer

SEED = 20240611
N_TREES = 50
PARAMS: dict[str, Any] = {
    "objective": "binary",
    "num_leaves": 15,
    "learning_rate": 0.1,
    "seed": SEED,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 1,
    "verbose": -1,
}
# Nothing in this dataset is personal data; one feature is flagged to show what
# reviewers see of a sensitive feature (its attribution folded into one row).
SENSITIVE_FEATURE = "mean_texture"
# Where the request came from, drawn with a fixed seed; "referral" trips a risk rule.
CHANNELS = ("clinic", "screening", "referral")
CHANNEL_WEIGHTS = (0.6, 0.3, 0.1)


@dataclass(frozen=True)
class Data:
    """scikit-learn's bundled breast cancer data, named as the registry wants it."""

    rows: np.ndarray
    target: np.ndarray
    # LightGBM replaces whitespace in feature names; routing field paths exclude it too.
    feature_names: list[str]
    # The binary objective scores class 1, so target_names is the output order.
    labels: list[str]
    # Per row, the request's channel (the prediction's context).
    channels: np.ndarray


def data_load() -> Data:
    dataset = load_breast_cancer()
    return Data(
        rows=dataset.data,
        target=dataset.target,
        feature_names=[str(name).replace(" ", "_") for name in dataset.feature_names],
        labels=[str(name) for name in dataset.target_names],
        channels=np.random.default_rng(SEED).choice(
            CHANNELS, size=len(dataset.target), p=CHANNEL_WEIGHTS
        ),
    )


def routing(*, queue: str) -> dict[str, Any]:
    """The routing policy: low confidence, two risk rules, an audit sample, SLAs."""
    return {
        "min_confidence": 0.9,
        "risk_rules": [
            {"field": "features.mean_radius", "op": ">=", "value": 20.0, "reason": "large_tumour"},
            {"field": "context.channel", "op": "==", "value": "referral", "reason": "referral"},
        ],
        "audit_rate": 0.05,
        "sla": {"default": "PT4H", "large_tumour": "PT1H"},
        "queue": queue,
    }


def train(rows: np.ndarray, target: np.ndarray, feature_names: list[str]) -> lightgbm.Booster:
    """A small LightGBM binary classifier: ``N_TREES`` trees of ``PARAMS``."""
    train_set = lightgbm.Dataset(rows, label=target, feature_name=feature_names)
    return lightgbm.train(PARAMS, train_set, num_boost_round=N_TREES)


def artifact(booster: lightgbm.Booster) -> bytes:
    """The LightGBM text model, as the registry stores it."""
    return booster.model_to_string().encode()


def model_spec(
    data: Data, *, name: str, version: str, booster: lightgbm.Booster, queue: str
) -> dict[str, Any]:
    """The registration body: the contract's spec, with the model file base64-encoded."""
    return {
        "name": name,
        "version": version,
        "task": "binary_classification",
        "labels": data.labels,
        "features": [
            {"name": feature, "type": "numeric", "sensitive": feature == SENSITIVE_FEATURE}
            for feature in data.feature_names
        ],
        "explainer": {"kind": "lightgbm"},
        "routing": routing(queue=queue),
        "artifact": base64.b64encode(artifact(booster)).decode("ascii"),
    }


def prediction(
    data: Data, *, row: int, positive: float, model_ref: str, external_id: str
) -> dict[str, Any]:
    """Row ``row`` as a model server sends it, scored P(labels[1]) = ``positive``.

    Probabilities are ``[1 - p, p]`` unrounded, so they sum to 1 to within float error.
    """
    negative_label, positive_label = data.labels
    p = float(positive)
    return {
        "model": model_ref,
        "external_id": external_id,
        "features": dict(zip(data.feature_names, map(float, data.rows[row]), strict=True)),
        "prediction": {
            "label": positive_label if p > 0.5 else negative_label,
            "probabilities": {negative_label: 1.0 - p, positive_label: p},
        },
        "context": {"channel": str(data.channels[row])},
    }
