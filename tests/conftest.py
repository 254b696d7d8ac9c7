import pytest
import redis
from django.conf import settings
from rest_framework.test import APIClient

from apps.accounts.services import account_token, account_upsert
from tests.workers import PrivateRedis, broker_in_use

ROLES = ("producer", "reviewer", "escalation_manager", "pipeline", "admin")


def make_client(username: str, *roles: str, queues=()) -> APIClient:
    user = account_upsert(username=username, roles=roles, queues=queues)
    client = APIClient()
    client.token = account_token(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {client.token}")
    client.user = user
    return client


@pytest.fixture
def broker():
    """Task messages go to the test Redis database (flushed before and after) instead
    of running inline."""
    url = settings.TEST_REDIS_URL
    redis.Redis.from_url(url).flushdb()
    with broker_in_use(url):
        yield url
    redis.Redis.from_url(url).flushdb()


@pytest.fixture
def private_redis():
    """A redis-server of the test's own as the broker: the test may stop and start it."""
    redis_server = PrivateRedis()
    try:
        redis_server.start()
        with broker_in_use(redis_server.url):
            yield redis_server
    finally:
        redis_server.cleanup()


@pytest.fixture
def admin_client(db):
    return make_client("admin", "admin")


@pytest.fixture
def producer_client(db):
    return make_client("producer", "producer")


@pytest.fixture
def anon_client():
    return APIClient()


@pytest.fixture
def role_clients(db):
    return {role: make_client(f"user-{role}", role) for role in ROLES}


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


@pytest.fixture
def registered_model(admin_client):
    response = admin_client.post("/api/v1/models/", model_spec(), format="json")
    assert response.status_code == 201, response.content
    return response.json()


@pytest.fixture
def routed_items(producer_client, registered_model, django_capture_on_commit_callbacks):
    """Make ``n`` routed, claimable items; returns their ids in creation order."""

    def make(n: int, *, prefix: str = "item", **overrides) -> list[int]:
        items = [
            prediction_body(f"{prefix}-{i}", context={"amount": 20000}, **overrides)
            for i in range(n)
        ]
        with django_capture_on_commit_callbacks(execute=True):
            r = producer_client.post("/api/v1/predictions/", {"items": items}, format="json")
        assert r.status_code == 200, r.content
        return [a["review_item"] for a in r.json()["results"]]

    return make


def train_lightgbm(n_features: int = 4, n_classes: int = 2, *, seed: int = 7, n_trees: int = 20):
    """A small real LightGBM model and its training data (deterministic)."""
    import lightgbm
    import numpy as np

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(400, n_features))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    if n_classes > 2:
        y = np.digitize(X[:, 0], np.quantile(X[:, 0], np.linspace(0, 1, n_classes + 1)[1:-1]))
    params = {
        "n_estimators": n_trees,
        "num_leaves": 8,
        "verbose": -1,
        "random_state": seed,
        "deterministic": True,
        "n_jobs": 1,
    }
    model = lightgbm.LGBMClassifier(**params).fit(X, y)
    return model.booster_, X


def lightgbm_artifact(n_features: int = 4, n_classes: int = 2) -> bytes:
    booster, _ = train_lightgbm(n_features, n_classes)
    return booster.model_to_string().encode()
