"""The review workflow through the API: claim, heartbeat, release, decide, escalate."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.registry.models import ReasonCode
from apps.reviews.models import Decision, Escalation, ItemStatus, ReviewItem
from tests.factories import make_client

CLAIM = "/api/v1/queue/claim/"


def review(path_item, action):
    return f"/api/v1/reviews/{path_item}/{action}/"


@pytest.fixture
def reviewer(db):
    return make_client("rev-1", "reviewer")


def test_claim_leases_the_item_due_first_with_sensitive_features_removed(reviewer, routed_items):
    # given three ready items, the last one due first
    ids = routed_items(3)
    ReviewItem.objects.filter(id=ids[2]).update(due_at=timezone.now())
    # when a reviewer claims
    r = reviewer.post(CLAIM, format="json")
    # then it gets that item with a lease, and no sensitive feature
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["id"] == ids[2]
    assert body["status"] == "leased"
    assert set(body["lease"]) == {"token", "expires_at"}
    assert "age" not in body["prediction"]["features"]
    assert body["prediction"]["features"]["income"] == 52000
    assert body["reasons"] == ["high_amount"]
    # and the explanation, with the sensitive feature folded into one row
    explanation = body["explanation"]
    assert body["explanation_status"] == "ready"
    assert explanation["method"] == "precomputed"
    rows = {row["feature"]: row for row in explanation["contributions"]}
    assert set(rows) == {"income", "region", "homeowner", "sensitive features"}
    assert rows["sensitive features"]["value"] is None
    total = explanation["base_value"] + sum(r["contribution"] for r in rows.values())
    assert total == pytest.approx(explanation["model_output"]) == pytest.approx(0.91)
    sizes = [abs(r["contribution"]) for r in explanation["contributions"]]
    assert sizes == sorted(sizes, reverse=True)


def test_among_items_due_together_the_riskiest_comes_first(reviewer, routed_items):
    ids = routed_items(3)
    due = timezone.now()
    ReviewItem.objects.filter(id__in=ids).update(due_at=due)
    ReviewItem.objects.filter(id=ids[1]).update(priority=9)
    assert reviewer.post(CLAIM).json()["id"] == ids[1]


def test_a_reviewer_holding_a_lease_gets_the_same_item_back(reviewer, routed_items):
    routed_items(2)
    first = reviewer.post(CLAIM).json()
    again = reviewer.post(CLAIM).json()
    assert again["id"] == first["id"]
    assert again["lease"]["token"] == first["lease"]["token"]
    assert ReviewItem.objects.filter(status=ItemStatus.LEASED).count() == 1


def test_nothing_ready_is_204(reviewer, routed_items):
    assert reviewer.post(CLAIM).status_code == 204


def test_accept_decides_with_the_models_label(reviewer, routed_items, producer_client):
    # given a claimed item
    routed_items(1)
    item = reviewer.post(CLAIM).json()
    # when the reviewer accepts it
    r = reviewer.post(
        review(item["id"], "decide"),
        {"lease_token": item["lease"]["token"], "label": "approve"},
        format="json",
    )
    # then it is decided, and the prediction shows the final decision
    assert r.status_code == 200, r.content
    assert r.json()["status"] == "decided"
    assert r.json()["lease"] is None
    decision = Decision.objects.get()
    assert (decision.label, decision.overridden, decision.source) == ("approve", False, "reviewer")
    prediction = producer_client.get(f"/api/v1/predictions/{item['prediction']['id']}/").json()
    assert prediction["status"] == "decided"
    assert prediction["final"]["label"] == "approve"
    assert prediction["final"]["source"] == "reviewer"
    # and the item never comes back
    assert reviewer.post(CLAIM).status_code == 204


def test_override_needs_a_known_reason_code(reviewer, routed_items):
    routed_items(1)
    ReasonCode.objects.create(model_name="credit-default", code="income_misread")
    item = reviewer.post(CLAIM).json()
    token = item["lease"]["token"]
    url = review(item["id"], "decide")
    # without a reason code, or with an unknown one: 400 and nothing changes
    r = reviewer.post(url, {"lease_token": token, "label": "deny"}, format="json")
    assert r.status_code == 400
    assert "reason_code" in r.json()["error"]["details"]
    r = reviewer.post(
        url, {"lease_token": token, "label": "deny", "reason_code": "whim"}, format="json"
    )
    assert r.status_code == 400
    r = reviewer.post(url, {"lease_token": token, "label": "maybe"}, format="json")
    assert r.status_code == 400
    assert "label" in r.json()["error"]["details"]
    assert not Decision.objects.exists()
    assert ReviewItem.objects.get().status == ItemStatus.LEASED
    # with a known one: an override
    r = reviewer.post(
        url,
        {
            "lease_token": token,
            "label": "deny",
            "reason_code": "income_misread",
            "comment": "pay slip shows less",
        },
        format="json",
    )
    assert r.status_code == 200, r.content
    decision = Decision.objects.get()
    assert decision.overridden
    assert decision.reason_code == "income_misread"


def test_release_gives_the_item_back_unchanged(reviewer, routed_items):
    routed_items(1)
    item = reviewer.post(CLAIM).json()
    r = reviewer.post(
        review(item["id"], "release"), {"lease_token": item["lease"]["token"]}, format="json"
    )
    assert r.status_code == 200
    assert r.json()["status"] == "ready"
    assert r.json()["lease"] is None
    other = make_client("rev-2", "reviewer")
    assert other.post(CLAIM).json()["id"] == item["id"]


def test_a_wrong_or_stale_token_is_409_and_changes_nothing(reviewer, routed_items):
    routed_items(1)
    item = reviewer.post(CLAIM).json()
    for token in ("not-a-token", "00000000-0000-0000-0000-000000000000"):
        for action, extra in (
            ("heartbeat", {}),
            ("release", {}),
            ("decide", {"label": "approve"}),
            ("escalate", {"reason": "odd"}),
        ):
            r = reviewer.post(
                review(item["id"], action), {"lease_token": token, **extra}, format="json"
            )
            assert r.status_code == 409, (action, r.content)
            assert r.json()["error"]["code"] == "lease_lost"
    assert ReviewItem.objects.get().status == ItemStatus.LEASED
    assert not Decision.objects.exists()


def test_another_reviewers_token_does_not_work_for_me(reviewer, routed_items):
    routed_items(1)
    item = reviewer.post(CLAIM).json()
    other = make_client("rev-2", "reviewer")
    r = other.post(
        review(item["id"], "decide"),
        {"lease_token": item["lease"]["token"], "label": "approve"},
        format="json",
    )
    assert r.status_code == 409


def test_heartbeat_extends_the_lease(reviewer, routed_items, settings):
    routed_items(1)
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        item = reviewer.post(CLAIM).json()
        clock.shift(timedelta(seconds=settings.REVIEW_LEASE_SECONDS - 1))
        r = reviewer.post(
            review(item["id"], "heartbeat"), {"lease_token": item["lease"]["token"]}, format="json"
        )
        assert r.status_code == 200
        clock.shift(timedelta(seconds=settings.REVIEW_LEASE_SECONDS - 1))
        r = reviewer.post(
            review(item["id"], "decide"),
            {"lease_token": item["lease"]["token"], "label": "approve"},
            format="json",
        )
        assert r.status_code == 200


def test_a_decision_after_expiry_and_reclaim_is_409_and_the_second_stands(
    reviewer, routed_items, settings
):
    # given an item claimed by a first reviewer whose lease then expires
    routed_items(1)
    ReasonCode.objects.create(model_name="credit-default", code="income_misread")
    with time_machine.travel(timezone.now(), tick=False) as clock:
        first = reviewer.post(CLAIM).json()
        clock.shift(timedelta(seconds=settings.REVIEW_LEASE_SECONDS + 1))
        # when a second reviewer claims it and decides
        second_client = make_client("rev-2", "reviewer")
        second = second_client.post(CLAIM).json()
        assert second["id"] == first["id"]
        # and the first reviewer's late decision arrives
        late = reviewer.post(
            review(first["id"], "decide"),
            {"lease_token": first["lease"]["token"], "label": "approve"},
            format="json",
        )
        r = second_client.post(
            review(second["id"], "decide"),
            {
                "lease_token": second["lease"]["token"],
                "label": "deny",
                "reason_code": "income_misread",
            },
            format="json",
        )
    # then the late one is refused and the second reviewer's decision stands
    assert late.status_code == 409
    assert r.status_code == 200, r.content
    assert r.json()["status"] == "decided"
    decision = Decision.objects.get()
    assert (decision.label, decision.reason_code, decision.overridden) == (
        "deny",
        "income_misread",
        True,
    )
    assert decision.decided_by.username == "rev-2"
    assert ReviewItem.objects.get().status == ItemStatus.DECIDED
    assert ReviewItem.objects.get().lease_expiries == 1
    assert AuditEvent.objects.filter(action="lease_expired").count() == 1


def test_escalate_then_a_manager_resolves(reviewer, routed_items, producer_client):
    routed_items(1)
    item = reviewer.post(CLAIM).json()
    r = reviewer.post(
        review(item["id"], "escalate"),
        {
            "lease_token": item["lease"]["token"],
            "reason": "suspected_fraud",
            "comment": "address mismatch",
        },
        format="json",
    )
    assert r.status_code == 200, r.content
    assert r.json()["status"] == "escalated"
    # the reviewer cannot see escalations; a manager can
    assert reviewer.get("/api/v1/escalations/?status=open").status_code == 403
    manager = make_client("mgr", "escalation_manager")
    page = manager.get("/api/v1/escalations/?status=open").json()
    (escalation,) = page["results"]
    assert escalation["reason"] == "suspected_fraud"
    assert escalation["raised_by"] == "rev-1"
    assert escalation["status"] == "open"
    assert escalation["item"] == item["id"]
    assert "age" not in escalation["prediction"]["features"]
    # claim, then resolve with a final label
    claimed = manager.post(f"/api/v1/escalations/{escalation['id']}/claim/").json()
    assert claimed["status"] == "claimed"
    assert claimed["lease"]["token"]
    resolved = manager.post(
        f"/api/v1/escalations/{escalation['id']}/resolve/",
        {"label": "deny", "comment": "confirmed"},
        format="json",
    )
    assert resolved.status_code == 200, resolved.content
    assert resolved.json()["status"] == "resolved"
    final = producer_client.get(f"/api/v1/predictions/{item['prediction']['id']}/").json()
    assert final["status"] == "decided"
    assert final["final"]["source"] == "escalation"
    assert final["final"]["label"] == "deny"


def test_a_manager_returns_an_escalation_to_the_queue(reviewer, routed_items):
    routed_items(1)
    item = reviewer.post(CLAIM).json()
    reviewer.post(
        review(item["id"], "escalate"),
        {"lease_token": item["lease"]["token"], "reason": "unclear"},
        format="json",
    )
    manager = make_client("mgr", "escalation_manager")
    escalation = Escalation.objects.get()
    r = manager.post(
        f"/api/v1/escalations/{escalation.id}/return/",
        {"comment": "look at the pay slip"},
        format="json",
    )
    assert r.status_code == 200
    assert r.json()["status"] == "returned"
    assert reviewer.post(CLAIM).json()["id"] == item["id"]


def test_an_escalation_claimed_by_one_manager_cannot_be_closed_by_another(reviewer, routed_items):
    routed_items(1)
    item = reviewer.post(CLAIM).json()
    reviewer.post(
        review(item["id"], "escalate"),
        {"lease_token": item["lease"]["token"], "reason": "unclear"},
        format="json",
    )
    escalation = Escalation.objects.get()
    first, second = make_client("m1", "escalation_manager"), make_client("m2", "escalation_manager")
    assert first.post(f"/api/v1/escalations/{escalation.id}/claim/").status_code == 200
    assert second.post(f"/api/v1/escalations/{escalation.id}/claim/").status_code == 409
    r = second.post(
        f"/api/v1/escalations/{escalation.id}/resolve/", {"label": "deny"}, format="json"
    )
    assert r.status_code == 409
    assert not Decision.objects.exists()


def test_claim_in_a_named_queue(routed_items):
    routed_items(1)
    member = make_client("rev-q", "reviewer", queues=["default"])
    assert member.post(CLAIM, {"queue": "default"}, format="json").status_code == 200
    outsider = make_client("rev-o", "reviewer", queues=["other"])
    r = outsider.post(CLAIM, {"queue": "default"}, format="json")
    assert r.status_code == 404
    assert outsider.post(CLAIM, {"queue": "nope"}, format="json").status_code == 404


def test_a_stale_escalation_token_is_refused_even_when_the_escalation_reopened(
    reviewer, routed_items, settings
):
    # given an escalation claimed by a manager whose claim then expired
    routed_items(1)
    item = reviewer.post(CLAIM).json()
    reviewer.post(
        review(item["id"], "escalate"),
        {"lease_token": item["lease"]["token"], "reason": "unclear"},
        format="json",
    )
    escalation = Escalation.objects.get()
    manager = make_client("mgr", "escalation_manager")
    with time_machine.travel(timezone.now(), tick=False) as clock:
        token = manager.post(f"/api/v1/escalations/{escalation.id}/claim/").json()["lease"]["token"]
        clock.shift(timedelta(seconds=settings.REVIEW_LEASE_SECONDS + 1))
        from apps.reviews.tasks import expire_leases

        expire_leases.run()
        # when the manager resolves with the old token
        r = manager.post(
            f"/api/v1/escalations/{escalation.id}/resolve/",
            {"label": "deny", "lease_token": token},
            format="json",
        )
    # then it is refused, and nothing is decided
    assert r.status_code == 409
    assert not Decision.objects.exists()


def test_a_returned_item_starts_its_lease_count_afresh(reviewer, routed_items):
    routed_items(1)
    item = reviewer.post(CLAIM).json()
    reviewer.post(
        review(item["id"], "escalate"),
        {"lease_token": item["lease"]["token"], "reason": "unclear"},
        format="json",
    )
    ReviewItem.objects.filter(id=item["id"]).update(lease_expiries=5)
    manager = make_client("mgr", "escalation_manager")
    manager.post(f"/api/v1/escalations/{Escalation.objects.get().id}/return/", format="json")
    assert ReviewItem.objects.get(id=item["id"]).lease_expiries == 0
