"""Fixtures of the webhook tests: a real HTTP receiver on loopback (tests/helpers.py),
the permission to reach it, and a reviewer who decides through the API."""

from collections.abc import Iterator

import pytest

from tests.factories import make_client
from tests.helpers import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def allow_loopback(settings):
    """The loopback receiver is private: allow it (production refuses it, see
    test_address_guard and the refusal tests)."""
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = True
    return settings


@pytest.fixture
def reviewer(db):
    return make_client("rev-1", "reviewer")


@pytest.fixture
def decide(reviewer, django_capture_on_commit_callbacks):
    """Claim the next item and decide it through the API, running after-commit work."""

    def run(label: str = "approve", **extra) -> dict:
        item = reviewer.post("/api/v1/queue/claim/").json()
        body = {"lease_token": item["lease"]["token"], "label": label, **extra}
        with django_capture_on_commit_callbacks(execute=True):
            r = reviewer.post(f"/api/v1/reviews/{item['id']}/decide/", body, format="json")
        assert r.status_code == 200, r.content
        return item

    return run
