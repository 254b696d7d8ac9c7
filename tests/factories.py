"""Builders of test data, in one place for every test package: accounts and their
clients, registration and prediction bodies, review items and their decisions and
explanations made straight in the database, webhook subscriptions, and small real
models (LightGBM, XGBoost, scikit-learn) with their artifacts.

Conftest files hold fixtures only; what a test module imports comes from here or from
``tests.helpers``. Builders are plain functions over the services and ``bulk_create``
(a builder that makes thousands of rows does it in a few INSERTs)."""

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import cache

import numpy as np
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.services import account_token, account_upsert
from apps.explanations.documents import explanation_document
from apps.explanations.models import Explanation
from apps.predictions.models import Prediction
from apps.queues.models import Queue
from apps.registry.models import ModelVersion
from apps.reviews.models import ExplanationStatus, ItemStatus, ReviewItem
from apps.reviews.services.decisions import review_item_decide
from apps.reviews.services.leases import review_item_claim
from apps.webhooks.models import WebhookSubscription
from apps.webhooks.services.subscriptions import webhook_subscription_create

ROLES = ("producer", "reviewer", "escalation_manager", "pipeline", "admin")

# The password of accounts that log in to the review screens.
PASSWORD = "correct-horse-battery"


# -- accounts ----------------------------------------------------------------------


def make_client(username: str, *roles: str, queues=()) -> APIClient:
    user = account_upsert(username=username, roles=roles, queues=queues)
    client = APIClient()
    client.token = account_token(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {client.token}")
    client.user = user
    return client


def make_user(username: str, *roles: str, queues: Iterable[str] = ()):
    return account_upsert(username=username, roles=roles or ("reviewer",), queues=queues)


def login_client(username: str, *roles: str, queues=()) -> Client:
    account_upsert(username=username, roles=roles, queues=queues, password=PASSWORD)
    client = Client()
    assert client.login(username=username, password=PASSWORD)
    return client


# -- request bodies ----------------------------------------------------------------


def model_spec(**overrides):
    spec = {
        "name": "credit-default",
        "version": "3",
        "task": "binary_classification",
        "labels": ["approve", "deny"],
        "features": [
            {"name": "income", "type": "numeric"},
            {"name": "region", "type": "categorical", "categories": ["n", "s"]},
            {"name": "age", "type": "numeric", "sensitive": True},
            {"name": "homeowner", "type": "boolean"},
        ],
        "explainer": {"kind": "precomputed", "output": "probability"},
        "routing": {
            "min_confidence": 0.8,
            "risk_rules": [
                {"field": "context.amount", "op": ">=", "value": 10000, "reason": "high_amount"},
                {"field": "features.region", "op": "in", "value": ["s"], "reason": "region_s"},
            ],
            "audit_rate": 0.0,
            "sla": {"default": "PT4H", "high_amount": "PT1H"},
            "queue": "default",
        },
    }
    spec.update(overrides)
    return spec


def attributions_for(prediction: dict) -> dict:
    """Precomputed attributions that add up to the predicted label's probability."""
    p = prediction["probabilities"][prediction["label"]]
    share = (p - 0.5) / 4
    return {
        "base_value": 0.5,
        "values": {"income": 2 * share, "region": share, "age": share, "homeowner": 0.0},
    }


def prediction_body(external_id="app-1", *, model="credit-default:3", **overrides):
    """A prediction for the default model spec; attributions follow the prediction
    unless given."""
    body = {
        "model": model,
        "external_id": external_id,
        "features": {"income": 52000, "region": "n", "age": 41, "homeowner": False},
        "prediction": {"label": "approve", "probabilities": {"approve": 0.91, "deny": 0.09}},
        "context": {"amount": 500, "channel": "web"},
    }
    body.update(overrides)
    if "attributions" not in overrides and isinstance(body["prediction"], dict):
        try:
            body["attributions"] = attributions_for(body["prediction"])
        except (KeyError, TypeError):
            body["attributions"] = attributions_for(
                {"label": "approve", "probabilities": {"approve": 0.91}}
            )
    elif overrides.get("attributions", ...) is None:
        body.pop("attributions")
    return body


# -- review items, leases, decisions, explanations ----------------------------------


def make_items(
    *,
    model_version: ModelVersion,
    n: int,
    prefix: str = "item",
    status: str = ItemStatus.READY,
    due_at: datetime | None = None,
    due_step: timedelta = timedelta(seconds=1),
    queue: Queue | None = None,
) -> list[int]:
    """Make ``n`` routed predictions and their review items in two INSERTs; the item
    ids in creation order. Items are due ``due_step`` apart from ``due_at`` on (so a
    claim takes them in creation order); the model's label is always ``approve``."""
    now = timezone.now()
    due_at = due_at or now + timedelta(hours=4)
    predictions = Prediction.objects.bulk_create(
        [
            Prediction(
                model_version=model_version,
                external_id=f"{prefix}-{i}",
                content_hash=f"{i:064x}",
                features={"income": 1000 + i, "region": "n", "age": 41, "homeowner": False},
                context={"amount": 20000},
                label="approve",
                probabilities={"approve": 0.6, "deny": 0.4},
                routed=True,
                reasons=["low_confidence"],
                selection_probability=1.0,
                created_at=now,
            )
            for i in range(n)
        ],
        batch_size=5000,
    )
    items = ReviewItem.objects.bulk_create(
        [
            ReviewItem(
                prediction_id=p.id,
                queue=queue or model_version.queue,
                status=status,
                reasons=["low_confidence"],
                priority=float(i % 7),
                due_at=due_at + i * due_step,
                explanation_status=(
                    ExplanationStatus.PENDING
                    if status == ItemStatus.PENDING
                    else ExplanationStatus.READY
                ),
            )
            for i, p in enumerate(predictions)
        ],
        batch_size=5000,
    )
    return [item.id for item in items]


def lease_each_to_its_own_reviewer(item_ids: list[int], *, expires_at: datetime) -> None:
    """Put a live lease on each item, as if each had been claimed by another reviewer."""
    users = User.objects.bulk_create(User(username=f"bulk-rev-{i}") for i in item_ids)
    ReviewItem.objects.bulk_update(
        [
            ReviewItem(
                id=item_id,
                status=ItemStatus.LEASED,
                leased_by=user,
                lease_token=uuid.uuid4(),
                lease_expires_at=expires_at,
            )
            for item_id, user in zip(item_ids, users, strict=True)
        ],
        ["status", "leased_by", "lease_token", "lease_expires_at"],
    )


def decide_items(user, n: int, *, override_every: int = 0, queue: str | None = None) -> list[int]:
    """Claim and decide ``n`` items as ``user``; every ``override_every``-th is overridden
    to ``deny`` with reason ``policy``. The decided item ids in decision order."""
    decided = []
    for i in range(n):
        item = review_item_claim(user=user, queue=queue)
        assert item is not None, "ran out of ready items"
        override = bool(override_every) and i % override_every == 0
        review_item_decide(
            user=user,
            item_id=item.id,
            token=str(item.lease_token),
            label="deny" if override else "approve",
            reason_code="policy" if override else None,
        )
        decided.append(item.id)
    return decided


def explain(
    item_ids: list[int], *, contributions=(0.05, -0.02, 0.3, -0.13), document: bool = True
) -> None:
    """Store an explanation for each item's prediction (base value 0.3), with the
    document the feed serves, or without (as rows stored before documents existed)."""
    now = timezone.now()
    fields = {
        "method": "precomputed",
        "output": "probability",
        "base_value": 0.3,
        "model_output": 0.3 + sum(contributions),
        "additivity_error": 0.0,
    }
    items = ReviewItem.objects.filter(id__in=item_ids).select_related("prediction__model_version")
    Explanation.objects.bulk_create(
        Explanation(
            prediction_id=item.prediction_id,
            contributions=list(contributions),
            seconds=0.0,
            created_at=now,
            document=explanation_document(
                **fields,
                contributions=contributions,
                names=[f["name"] for f in item.prediction.model_version.features],
                values=item.prediction.features,
            )
            if document
            else "",
            **fields,
        )
        for item in items
    )


# -- webhooks ----------------------------------------------------------------------


def subscribe(url: str, *events: str) -> tuple[WebhookSubscription, str]:
    return webhook_subscription_create(
        name="downstream", url=url, events=list(events or ("prediction.decided",))
    )


# -- small real models -------------------------------------------------------------
#
# Deterministic and single-threaded: the same data gives the same model, so a test may
# compare an explanation with the library's own contributions to 1e-6.


def synthetic_classes(n_features: int, n_classes: int, *, n_rows: int, seed: int = 7):
    """``n_rows`` standard normal rows and their classes: two from the sign of
    ``x0 + x1 / 2``, more from the quantiles of ``x0``."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, n_features))
    if n_classes == 2:
        return X, (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    return X, np.digitize(X[:, 0], np.quantile(X[:, 0], np.linspace(0, 1, n_classes + 1)[1:-1]))


def lightgbm_booster(X, y, *, n_trees: int, num_leaves: int = 8, seed: int = 0, **params):
    """A LightGBM classifier trained on ``X, y``: its booster."""
    import lightgbm

    options = {"verbose": -1, "deterministic": True, "n_jobs": 1, **params}
    model = lightgbm.LGBMClassifier(
        n_estimators=n_trees, num_leaves=num_leaves, random_state=seed, **options
    )
    return model.fit(X, y).booster_


def xgboost_booster(X, y, *, n_rounds: int, n_classes: int = 2):
    """An XGBoost classifier (depth 3) trained on ``X, y``: its booster."""
    import xgboost

    params = {"max_depth": 3, "nthread": 1, "seed": 0}
    if n_classes == 2:
        params["objective"] = "binary:logistic"
    else:
        params |= {"objective": "multi:softprob", "num_class": n_classes}
    return xgboost.train(params, xgboost.DMatrix(X, label=y), num_boost_round=n_rounds)


def gradient_boosting(X, y, *, n_trees: int):
    """A scikit-learn GradientBoostingClassifier (depth 2) trained on ``X, y``."""
    from sklearn.ensemble import GradientBoostingClassifier

    return GradientBoostingClassifier(n_estimators=n_trees, max_depth=2, random_state=0).fit(X, y)


def train_lightgbm(n_features: int = 4, n_classes: int = 2, *, seed: int = 7, n_trees: int = 20):
    """A small real LightGBM model and its training data (deterministic)."""
    X, y = synthetic_classes(n_features, n_classes, n_rows=400, seed=seed)
    return lightgbm_booster(X, y, n_trees=n_trees, seed=seed), X


@cache
def lightgbm_artifact(n_features: int = 4, n_classes: int = 2) -> bytes:
    """A LightGBM text model file."""
    booster, _ = train_lightgbm(n_features, n_classes)
    return booster.model_to_string().encode()


@cache
def xgboost_artifact(n_features: int = 4, n_classes: int = 2, model_format: str = "json"):
    """An XGBoost model file (JSON or UBJ), ten rounds on 300 synthetic rows."""
    X, y = synthetic_classes(n_features, n_classes, n_rows=300)
    booster = xgboost_booster(X, y, n_rounds=10, n_classes=n_classes)
    return bytes(booster.save_raw(model_format))


@cache
def sklearn_artifact(n_features: int = 4, n_classes: int = 2) -> bytes:
    """A skops file of a GradientBoostingClassifier, ten trees on 300 synthetic rows."""
    import skops.io

    X, y = synthetic_classes(n_features, n_classes, n_rows=300)
    return skops.io.dumps(gradient_boosting(X, y, n_trees=10))
