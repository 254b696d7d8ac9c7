"""Fixtures for the label feed: items decided through the review services, and a
pipeline client that reads whole pages."""

import csv
import io
import json
from typing import Any

import pyarrow.parquet as pq
import pytest
from django.utils import timezone

from apps.explanations.documents import explanation_document
from apps.explanations.models import Explanation
from apps.registry.models import ModelVersion, ReasonCode
from apps.reviews.models import ReviewItem
from apps.reviews.services.decisions import review_item_decide
from apps.reviews.services.leases import review_item_claim
from tests.conftest import make_client
from tests.reviews.conftest import make_items, make_user

__all__ = ["decide_items", "make_items", "make_user", "read_page"]


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


def read_page(client, **params: Any) -> tuple[int, Any, str | None]:
    """GET /api/v1/labels/: (status, parsed body, X-Next-Cursor). JSONL and CSV parse to
    lists of dicts, Parquet to a pyarrow Table; error bodies to dicts."""
    params = {k: v for k, v in params.items() if v is not None}
    response = client.get("/api/v1/labels/", params)
    if response.status_code != 200:
        return response.status_code, response.json(), None
    body = b"".join(response.streaming_content)
    fmt = params.get("format", "jsonl")
    if fmt == "jsonl":
        parsed: Any = [json.loads(line) for line in body.decode().splitlines()]
    elif fmt == "csv":
        parsed = list(csv.DictReader(io.StringIO(body.decode())))
    else:
        parsed = pq.read_table(io.BytesIO(body))
    return 200, parsed, response["X-Next-Cursor"]


@pytest.fixture
def pipeline_client(db):
    return make_client("pipeline", "pipeline")


@pytest.fixture
def reviewer(db):
    return make_user("rev-1", "reviewer")


@pytest.fixture
def model_version(registered_model) -> ModelVersion:
    version = ModelVersion.objects.get(id=registered_model["id"])
    ReasonCode.objects.get_or_create(model_name=version.name, code="policy")
    return version
