"""A returned escalation's comment reaches the item's next reviewer: the claim (and
every answer with the item) carries ``returned``, the item's latest return from
escalation, read in the statement that reads the item."""

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.reviews.models import Escalation, ReviewItem
from apps.reviews.outputs import ItemOutputSerializer, item_output
from apps.reviews.selectors import review_item_for_output
from tests.factories import make_client

from .test_hot_path import by_the_orm, rendered, statements


def by_the_declared_fields(item_id: int) -> dict:
    """What DRF's declared fields render for the item as the ORM loads it."""
    return rendered(ItemOutputSerializer().to_representation_by_fields(by_the_orm(item_id)))


CLAIM = "/api/v1/queue/claim/"
NOTE = 'Income is monthly, not yearly: <b>check</b> "the payslip" & decide.'


def escalate(client, item: dict, reason: str = "unclear") -> Escalation:
    r = client.post(
        f"/api/v1/reviews/{item['id']}/escalate/",
        {"lease_token": item["lease"]["token"], "reason": reason},
        format="json",
    )
    assert r.status_code == 200, r.content
    return Escalation.objects.get(item_id=item["id"], status="open")


def send_back(manager, escalation: Escalation, body: dict) -> dict:
    r = manager.post(f"/api/v1/escalations/{escalation.id}/return/", body, format="json")
    assert r.status_code == 200, r.content
    return r.json()


@pytest.mark.django_db
def test_the_next_reviewer_sees_the_managers_comment_and_a_later_claim_no_stale_one(
    routed_items,
):
    # given two items, the first due first, and a first reviewer who escalates it
    first, second = routed_items(2)
    ReviewItem.objects.filter(id=first).update(due_at="2000-01-01T00:00:00Z")
    one = make_client("ret-rev-1", "reviewer")
    claimed = one.post(CLAIM).json()
    assert claimed["id"] == first and claimed["returned"] is None
    escalation = escalate(one, claimed)
    # and a manager who claims the escalation and returns it with a comment
    manager = make_client("ret-mgr", "escalation_manager")
    token = manager.post(f"/api/v1/escalations/{escalation.id}/claim/").json()["lease"]["token"]
    returned = send_back(manager, escalation, {"comment": NOTE, "lease_token": token})
    assert returned["status"] == "returned"
    # when another reviewer claims
    two = make_client("ret-rev-2", "reviewer")
    with CaptureQueriesContext(connection) as claim:
        response = two.post(CLAIM)
    # then they get the item with the manager's comment, as typed, and when it came back
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["id"] == first
    assert body["returned"]["comment"] == NOTE
    closed_at = Escalation.objects.get(id=escalation.id).closed_at
    assert body["returned"]["returned_at"] == rendered({"t": closed_at})["t"]
    assert set(body["returned"]) == {"comment", "returned_at"}
    # and nothing says who the manager was
    assert "ret-mgr" not in json.dumps(body)
    # and the claim is still five statements (the return is read by the claim's own join)
    assert len(statements(claim)) == 5, [sql[:80] for sql in statements(claim)]
    # and the answer is what DRF's declared fields make of the item the ORM loads
    assert body == by_the_declared_fields(first)
    # when a heartbeat renews the lease, the item still carries the comment
    beat = two.post(
        f"/api/v1/reviews/{first}/heartbeat/",
        {"lease_token": body["lease"]["token"]},
        format="json",
    )
    assert beat.json()["returned"]["comment"] == NOTE
    # when the second reviewer decides it and claims again
    decided = two.post(
        f"/api/v1/reviews/{first}/decide/",
        {"lease_token": body["lease"]["token"], "label": "approve"},
        format="json",
    )
    assert decided.status_code == 200, decided.content
    following = two.post(CLAIM).json()
    # then the next item carries no comment of the one before
    assert following["id"] == second
    assert following["returned"] is None


@pytest.mark.django_db
def test_a_second_return_replaces_the_first_and_may_have_no_comment(routed_items):
    # given an item returned once with a comment
    (item_id,) = routed_items(1)
    reviewer = make_client("ret2-rev", "reviewer")
    manager = make_client("ret2-mgr", "escalation_manager")
    first = escalate(reviewer, reviewer.post(CLAIM).json())
    send_back(manager, first, {"comment": "look at the income"})
    again = reviewer.post(CLAIM).json()
    assert again["returned"]["comment"] == "look at the income"
    # when it is escalated again and returned without a comment
    second = escalate(reviewer, again, reason="still_unclear")
    send_back(manager, second, {})
    # then the next claim shows the latest return: no comment, the later time
    latest = reviewer.post(CLAIM).json()
    assert latest["id"] == item_id
    assert latest["returned"]["comment"] == ""
    closed_at = Escalation.objects.get(id=second.id).closed_at
    assert latest["returned"]["returned_at"] == rendered({"t": closed_at})["t"]
    assert latest == by_the_declared_fields(item_id)


@pytest.mark.django_db
def test_a_resolved_escalation_is_no_return(routed_items):
    # given an item escalated and then resolved by a manager
    (item_id,) = routed_items(1)
    reviewer = make_client("ret3-rev", "reviewer")
    manager = make_client("ret3-mgr", "escalation_manager")
    escalation = escalate(reviewer, reviewer.post(CLAIM).json())
    r = manager.post(
        f"/api/v1/escalations/{escalation.id}/resolve/",
        {"label": "deny", "comment": "not for a reviewer"},
        format="json",
    )
    assert r.status_code == 200, r.content
    # then the item, read as any answer reads it, carries no return
    assert item_output(review_item_for_output(item_id=item_id))["returned"] is None
    assert by_the_declared_fields(item_id)["returned"] is None
