"""Fixtures for every test package: the brokers, clients per role, a registered model
and routed items made through the API, and a receiver that stands for a public host.
Builders are in tests/factories.py, shared helpers in tests/helpers.py."""

import pytest
import redis
from django.conf import settings
from rest_framework.test import APIClient

from apps.webhooks import outbound
from tests.factories import ROLES, make_client, model_spec, prediction_body
from tests.helpers import Receiver
from tests.workers import PrivateRedis, broker_in_use


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


@pytest.fixture
def public_loopback(monkeypatch):
    """Let 127.0.0.2 stand for a public receiver (no test may reach the internet);
    every other address keeps the real rules."""
    real = outbound.address_refusal

    def refusal(ip):
        return None if str(ip) == "127.0.0.2" else real(ip)

    monkeypatch.setattr(outbound, "address_refusal", refusal)
    public = Receiver(host="127.0.0.2").start()
    yield public
    public.stop()
