import pytest
from rest_framework.test import APIClient

from apps.accounts.services import account_token, account_upsert

ROLES = ("producer", "reviewer", "escalation_manager", "pipeline", "admin")


def make_client(username: str, *roles: str, queues=()) -> APIClient:
    user = account_upsert(username=username, roles=roles, queues=queues)
    client = APIClient()
    client.token = account_token(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {client.token}")
    client.user = user
    return client


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
        "explainer": {"kind": "precomputed", "output": "log_odds"},
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


def prediction_body(external_id="app-1", *, model="credit-default:3", **overrides):
    body = {
        "model": model,
        "external_id": external_id,
        "features": {"income": 52000, "region": "n", "age": 41, "homeowner": False},
        "prediction": {"label": "approve", "probabilities": {"approve": 0.91, "deny": 0.09}},
        "context": {"amount": 500, "channel": "web"},
        "attributions": {
            "base_value": -0.4,
            "values": {"income": 0.1, "region": 0.2, "age": 0.0, "homeowner": -0.1},
        },
    }
    body.update(overrides)
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
