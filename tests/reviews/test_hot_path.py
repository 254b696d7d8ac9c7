"""The claim and decide path's shortcuts answer exactly what the plain code answered:
the caller read with the token in one statement, items read by one hand-written join,
the output built without walking DRF's fields, the claim in five statements."""

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.renderers import JSONRenderer

from apps.accounts.roles import user_roles
from apps.accounts.selectors import caller_by_token
from apps.queues.scope import queue_scope
from apps.reviews.models import ReviewItem
from apps.reviews.outputs import ItemOutputSerializer, item_output
from apps.reviews.selectors import review_item_for_output
from tests.factories import make_client


def rendered(data: dict) -> dict:
    return json.loads(JSONRenderer().render(data))


def statements(queries: CaptureQueriesContext) -> list[str]:
    """The statements sent, less the savepoints of the test's own transaction."""
    sqls = [q["sql"] for q in queries.captured_queries]
    return [sql for sql in sqls if not sql.startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))]


def by_the_orm(item_id: int) -> ReviewItem:
    return ReviewItem.objects.select_related(
        "prediction__model_version", "prediction__explanation", "queue"
    ).get(id=item_id)


@pytest.mark.django_db
def test_claim_output_is_what_the_declared_fields_render(routed_items):
    # given a reviewer and explained items (one with no explanation row at all)
    reviewer = make_client("hot-rev", "reviewer")
    first, second = routed_items(2)
    ReviewItem.objects.filter(id=second).update(due_at="2000-01-01T00:00:00Z")
    from apps.explanations.models import Explanation

    Explanation.objects.filter(prediction__review_item__id=second).delete()
    for expected_id in (second, first):
        # when the reviewer claims, then decides
        response = reviewer.post("/api/v1/queue/claim/", format="json")
        assert response.status_code == 200, response.content
        body = response.json()
        assert body["id"] == expected_id
        # then the answer is what DRF's declared fields make of the same item
        serializer = ItemOutputSerializer()
        assert body == rendered(serializer.to_representation_by_fields(by_the_orm(expected_id)))
        assert body["lease"]["token"] and body["status"] == "leased"
        assert (body["explanation"] is None) == (expected_id == second)
        # and the hand-written join loads what select_related loads
        loaded = review_item_for_output(item_id=expected_id)
        assert rendered(item_output(loaded)) == rendered(
            serializer.to_representation_by_fields(by_the_orm(expected_id))
        )
        decided = reviewer.post(
            f"/api/v1/reviews/{expected_id}/decide/",
            {"lease_token": body["lease"]["token"], "label": "approve"},
            format="json",
        )
        assert decided.status_code == 200, decided.content
        assert decided.json() == rendered(
            serializer.to_representation_by_fields(by_the_orm(expected_id))
        )
        assert decided.json()["lease"] is None


@pytest.mark.django_db
def test_a_claim_is_five_statements_and_a_heartbeat_three(routed_items):
    # given a reviewer of one queue and a ready item
    reviewer = make_client("hot-counted", "reviewer", queues=["default"])
    routed_items(1)
    # when the reviewer claims
    with CaptureQueriesContext(connection) as claim:
        response = reviewer.post("/api/v1/queue/claim/", format="json")
    assert response.status_code == 200
    # then: caller (token, roles, queues), claim lock, leases to settle, the claim
    # with its output, the audit event
    assert len(statements(claim)) == 5, [sql[:80] for sql in statements(claim)]
    # and a heartbeat: caller, the item, the compare-and-set
    token = response.json()["lease"]["token"]
    with CaptureQueriesContext(connection) as heartbeat:
        beat = reviewer.post(
            f"/api/v1/reviews/{response.json()['id']}/heartbeat/",
            {"lease_token": token},
            format="json",
        )
    assert beat.status_code == 200
    assert len(statements(heartbeat)) == 3, [sql[:80] for sql in statements(heartbeat)]


@pytest.mark.django_db
def test_the_caller_is_read_with_roles_and_queues_as_the_plain_lookups_read_them():
    # given accounts with several roles, queues or none
    cases = [
        make_client("hot-a", "reviewer", queues=["q1", "q2"]),
        make_client("hot-b", "escalation_manager"),
        make_client("hot-c", "producer", "admin"),
    ]
    for client in cases:
        # when the token is looked up by the queue endpoints' selector
        token = caller_by_token(key=client.token)
        # then user, roles and queues are those the ORM lookups give
        assert token is not None and token.user.id == client.user.id
        fresh = type(client.user).objects.get(id=client.user.id)
        assert user_roles(token.user) == user_roles(fresh)
        assert queue_scope(token.user) == queue_scope(fresh)
        assert token.user.username == fresh.username
    assert caller_by_token(key="0" * 40) is None


@pytest.mark.django_db
def test_an_unknown_token_or_an_inactive_user_is_401_on_the_queue_endpoints(routed_items):
    # given an item, a reviewer who was deactivated and a made-up token
    routed_items(1)
    inactive = make_client("hot-inactive", "reviewer")
    type(inactive.user).objects.filter(id=inactive.user.id).update(is_active=False)
    stranger = make_client("hot-stranger", "reviewer")
    stranger.credentials(HTTP_AUTHORIZATION="Token " + "f" * 40)
    for client in (inactive, stranger):
        # when they claim
        response = client.post("/api/v1/queue/claim/", format="json")
        # then 401 in the contract's shape, and nothing is leased
        assert response.status_code == 401
        assert "error" in response.json()
        assert response["WWW-Authenticate"] == "Token"
    assert not ReviewItem.objects.filter(status="leased").exists()
