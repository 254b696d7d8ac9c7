"""A live server with decided items, and pipeline clients that talk to it over HTTP."""

from dataclasses import dataclass, field

import pytest
from reviewqueue_client import RetryPolicy, ReviewQueueClient

from apps.accounts.services import account_token, account_upsert
from apps.registry.models import ModelVersion, ReasonCode
from apps.reviews.services.decisions import review_item_decide
from apps.reviews.services.leases import review_item_claim
from tests.factories import make_client, make_items, model_spec

# Against the live server nothing is transient: a retry would hide a bug.
NO_RETRY = RetryPolicy(max_attempts=1)


@dataclass
class Feed:
    """The live server, a pipeline token, and the labels decided so far (by prediction
    id, in decision order)."""

    url: str
    token: str
    model: ModelVersion
    reviewer: object
    decided: list[int] = field(default_factory=list)
    overridden: set[int] = field(default_factory=set)
    made: int = 0

    def client(self, token: str | None = None, **options) -> ReviewQueueClient:
        options.setdefault("retry", NO_RETRY)
        return ReviewQueueClient(self.url, token or self.token, timeout=30, **options)

    def decide(self, n: int, *, override_every: int = 0) -> list[int]:
        """Make ``n`` routed items and decide them as the reviewer would; every
        ``override_every``-th is overridden to ``deny``. Their prediction ids."""
        make_items(model_version=self.model, n=n, prefix=f"batch{self.made}")
        self.made += 1
        ids = []
        for i in range(n):
            item = review_item_claim(user=self.reviewer)
            assert item is not None
            override = bool(override_every) and i % override_every == 0
            review_item_decide(
                user=self.reviewer,
                item_id=item.id,
                token=str(item.lease_token),
                label="deny" if override else "approve",
                reason_code="policy" if override else None,
            )
            ids.append(item.prediction_id)
            if override:
                self.overridden.add(item.prediction_id)
        self.decided += ids
        return ids


@pytest.fixture
def feed(live_server, transactional_db) -> Feed:
    admin = make_client("admin", "admin")
    response = admin.post("/api/v1/models/", model_spec(), format="json")
    assert response.status_code == 201, response.content
    model = ModelVersion.objects.get(id=response.json()["id"])
    ReasonCode.objects.create(model_name=model.name, code="policy")
    pipeline = account_upsert(username="pipeline", roles=["pipeline"])
    return Feed(
        url=live_server.url,
        token=account_token(user=pipeline),
        model=model,
        reviewer=account_upsert(username="reviewer", roles=["reviewer"]),
    )
