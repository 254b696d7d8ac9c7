"""Who may call the review and escalation endpoints, on which queues, and what bad
input gets: every refusal is an answer with the contract's error body, and changes
nothing."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.audit.models import AuditEvent
from apps.registry.models import ModelVersion
from apps.reviews.models import Escalation, ItemStatus, ReviewItem
from apps.reviews.services.decisions import review_item_escalate
from apps.reviews.services.leases import review_item_claim
from tests.factories import ROLES, make_client, make_items, make_user, model_spec
from tests.helpers import review_state

REVIEWER_ENDPOINTS = ["claim", "heartbeat", "release", "decide", "escalate"]
MANAGER_ENDPOINTS = [
    "escalation_list",
    "escalation_claim",
    "escalation_resolve",
    "escalation_return",
]
ADMITTED = {
    **dict.fromkeys(REVIEWER_ENDPOINTS, frozenset({"reviewer", "escalation_manager"})),
    **dict.fromkeys(MANAGER_ENDPOINTS, frozenset({"escalation_manager"})),
}


@pytest.fixture
def work(ready_items):
    """An item leased by ``holder``, another escalated (an open escalation), and a
    third ready: the targets of the calls, with real tokens in the bodies, so that a
    call let through by mistake would change something."""
    leased, escalated, _ready = ready_items(3)
    holder, escalator = make_user("holder"), make_user("escalator")
    token = review_item_claim(user=holder).lease_token
    assert ReviewItem.objects.get(id=leased).leased_by == holder
    claimed = review_item_claim(user=escalator)
    assert claimed.id == escalated
    review_item_escalate(
        user=escalator, item_id=escalated, token=claimed.lease_token, reason="unclear"
    )
    return {"item": leased, "token": str(token), "escalation": Escalation.objects.get().id}


def call(client, endpoint: str, work: dict, **body_overrides):
    """One call of ``endpoint`` on the work's objects, with a body that would succeed
    for the right caller."""
    item, token, escalation = work["item"], work["token"], work["escalation"]
    requests = {
        "claim": ("/api/v1/queue/claim/", {}),
        "heartbeat": (f"/api/v1/reviews/{item}/heartbeat/", {"lease_token": token}),
        "release": (f"/api/v1/reviews/{item}/release/", {"lease_token": token}),
        "decide": (f"/api/v1/reviews/{item}/decide/", {"lease_token": token, "label": "approve"}),
        "escalate": (f"/api/v1/reviews/{item}/escalate/", {"lease_token": token, "reason": "odd"}),
        "escalation_list": ("/api/v1/escalations/", None),
        "escalation_claim": (f"/api/v1/escalations/{escalation}/claim/", {}),
        "escalation_resolve": (f"/api/v1/escalations/{escalation}/resolve/", {"label": "deny"}),
        "escalation_return": (f"/api/v1/escalations/{escalation}/return/", {"comment": "no"}),
    }
    path, body = requests[endpoint]
    if body is None:
        return client.get(path, body_overrides)
    return client.post(path, {**body, **body_overrides}, format="json")


@pytest.mark.parametrize("endpoint", REVIEWER_ENDPOINTS + MANAGER_ENDPOINTS)
@pytest.mark.django_db
def test_no_credentials_is_401_and_changes_nothing(anon_client, work, endpoint):
    before = review_state()
    r = call(anon_client, endpoint, work)
    assert r.status_code == 401, r.content
    assert r.json()["error"]["code"] == "not_authenticated"
    assert review_state() == before
    assert not AuditEvent.objects.filter(action="denied").exists()


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("endpoint", REVIEWER_ENDPOINTS + MANAGER_ENDPOINTS)
@pytest.mark.django_db
def test_each_role_is_admitted_only_where_it_has_the_right(role_clients, work, endpoint, role):
    # given the work in the queue, and a caller holding one role
    client = role_clients[role]
    before = review_state()
    # when the caller calls the endpoint
    r = call(client, endpoint, work)
    if role in ADMITTED[endpoint]:
        # then a caller with the right gets past the permission check
        assert r.status_code not in (401, 403), r.content
        assert not AuditEvent.objects.filter(action="denied").exists()
        return
    # then anyone else is refused with 403, nothing changes, and the refusal is on record
    assert r.status_code == 403, r.content
    assert r.json()["error"]["code"] == "permission_denied"
    assert review_state() == before
    denied = AuditEvent.objects.get(action="denied")
    assert denied.actor_id == client.user.id


# Queue isolation


@pytest.fixture
def two_queues(admin_client, model_version):
    """Items in queue ``default`` (credit-default:3) and in queue ``queue-b`` (a second
    model routing there); a reviewer and a manager of each queue."""
    spec = model_spec(name="fraud-model", version="1")
    spec["routing"] = {**spec["routing"], "queue": "queue-b"}
    r = admin_client.post("/api/v1/models/", spec, format="json")
    assert r.status_code == 201, r.content
    model_b = ModelVersion.objects.get(id=r.json()["id"])
    assert model_b.queue.name == "queue-b"
    items_a = make_items(model_version=model_version, n=3, prefix="a")
    items_b = make_items(model_version=model_b, n=3, prefix="b-secret")
    clients = {
        "reviewer_a": make_client("rev-a", "reviewer", queues=["default"]),
        "reviewer_b": make_client("rev-b", "reviewer", queues=["queue-b"]),
        "manager_a": make_client("mgr-a", "escalation_manager", queues=["default"]),
        "manager_b": make_client("mgr-b", "escalation_manager", queues=["queue-b"]),
    }
    # one escalation in each queue, raised by that queue's reviewer
    for name, items in (("reviewer_a", items_a), ("reviewer_b", items_b)):
        client = clients[name]
        claimed = client.post("/api/v1/queue/claim/").json()
        assert claimed["id"] == items[0]
        r = client.post(
            f"/api/v1/reviews/{claimed['id']}/escalate/",
            {"lease_token": claimed["lease"]["token"], "reason": "unclear"},
            format="json",
        )
        assert r.status_code == 200, r.content
    # and an item of queue B leased by B's reviewer
    lease_b = clients["reviewer_b"].post("/api/v1/queue/claim/").json()
    assert lease_b["id"] == items_b[1]
    return {
        **clients,
        "items_a": items_a,
        "items_b": items_b,
        "escalation_a": Escalation.objects.get(item_id=items_a[0]).id,
        "escalation_b": Escalation.objects.get(item_id=items_b[0]).id,
        "lease_b": lease_b,
    }


def assert_not_found(r, code: str) -> None:
    assert r.status_code == 404, r.content
    body = r.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert b"b-secret" not in r.content and b"income" not in r.content


@pytest.mark.django_db
def test_a_reviewer_gets_404_for_every_action_on_an_item_of_another_queue(two_queues):
    # given B's item leased by B's reviewer, and A's reviewer who knows its id and token
    reviewer_a, lease_b = two_queues["reviewer_a"], two_queues["lease_b"]
    work = {"item": lease_b["id"], "token": lease_b["lease"]["token"], "escalation": 0}
    before = review_state()
    for endpoint in ["heartbeat", "release", "decide", "escalate"]:
        # when A's reviewer acts on it
        r = call(reviewer_a, endpoint, work)
        # then it does not exist for them, and nothing changes
        assert_not_found(r, "item_not_found")
    assert review_state() == before
    # and an item of B that is ready is invisible too
    work["item"] = two_queues["items_b"][2]
    assert_not_found(call(reviewer_a, "heartbeat", work), "item_not_found")


@pytest.mark.django_db
def test_a_reviewer_claims_only_items_of_its_queues(two_queues):
    reviewer_a = two_queues["reviewer_a"]
    ready_b = two_queues["items_b"][2]
    # when A's reviewer claims and decides until nothing is left
    claimed = []
    while (r := reviewer_a.post("/api/v1/queue/claim/")).status_code == 200:
        item = r.json()
        assert item["queue"] == "default"
        claimed.append(item["id"])
        decided = reviewer_a.post(
            f"/api/v1/reviews/{item['id']}/decide/",
            {"lease_token": item["lease"]["token"], "label": "approve"},
            format="json",
        )
        assert decided.status_code == 200, decided.content
    # then it got the ready items of queue A only, and 204 while B's item waits
    assert r.status_code == 204
    assert claimed == two_queues["items_a"][1:]
    assert ReviewItem.objects.get(id=ready_b).status == ItemStatus.READY
    # and naming queue B is a 404, not a way in
    r = reviewer_a.post("/api/v1/queue/claim/", {"queue": "queue-b"}, format="json")
    assert_not_found(r, "queue_not_found")
    assert ReviewItem.objects.get(id=ready_b).status == ItemStatus.READY


@pytest.mark.django_db
def test_a_manager_gets_404_for_escalations_of_another_queue_and_lists_only_its_own(
    two_queues,
):
    manager_a = two_queues["manager_a"]
    work = {"item": 0, "token": "", "escalation": two_queues["escalation_b"]}
    before = review_state()
    # when A's manager acts on B's escalation
    for endpoint in ["escalation_claim", "escalation_resolve", "escalation_return"]:
        r = call(manager_a, endpoint, work)
        # then it does not exist for them, and nothing changes
        assert_not_found(r, "escalation_not_found")
    assert review_state() == before
    # and A's manager lists A's escalation only, B's manager B's only
    for name, mine in (("manager_a", "escalation_a"), ("manager_b", "escalation_b")):
        for query in ({}, {"status": "open"}):
            page = two_queues[name].get("/api/v1/escalations/", query).json()
            assert [e["id"] for e in page["results"]] == [two_queues[mine]], (name, query)
    # while a manager of no queue in particular sees both
    everywhere = make_client("mgr-all", "escalation_manager")
    page = everywhere.get("/api/v1/escalations/").json()
    ids = sorted(e["id"] for e in page["results"])
    assert ids == sorted([two_queues["escalation_a"], two_queues["escalation_b"]])
    # and A's manager can still work on A's escalation
    r = manager_a.post(f"/api/v1/escalations/{two_queues['escalation_a']}/claim/")
    assert r.status_code == 200, r.content


# Bad input


@pytest.mark.parametrize(
    ("endpoint", "body", "field"),
    [
        ("heartbeat", {"lease_token": None}, "lease_token"),
        ("release", {"lease_token": None}, "lease_token"),
        ("decide", {"lease_token": None}, "lease_token"),
        ("escalate", {"lease_token": None}, "lease_token"),
        ("decide", {"label": None}, "label"),
        ("decide", {"label": ""}, "label"),
        ("escalate", {"reason": "Suspected Fraud"}, "reason"),
        ("escalate", {"reason": "suspectedFraud"}, "reason"),
        ("escalate", {"reason": "1st_reason"}, "reason"),
        ("escalate", {"reason": "x" * 65}, "reason"),
        ("escalate", {"reason": ""}, "reason"),
    ],
)
@pytest.mark.django_db
def test_bad_review_input_is_400_naming_the_field_and_changes_nothing(work, endpoint, body, field):
    # given the holder of the leased item
    holder = make_client("holder", "reviewer")
    before, events = review_state(), AuditEvent.objects.count()
    # when it sends a body with a missing or bad field (None: the field left out)
    sent = {k: v for k, v in body.items() if v is not None}
    missing = [k for k, v in body.items() if v is None]
    item, token = work["item"], work["token"]
    defaults = {
        "heartbeat": {"lease_token": token},
        "release": {"lease_token": token},
        "decide": {"lease_token": token, "label": "approve"},
        "escalate": {"lease_token": token, "reason": "odd"},
    }[endpoint]
    payload = {k: v for k, v in {**defaults, **sent}.items() if k not in missing}
    r = holder.post(f"/api/v1/reviews/{item}/{endpoint}/", payload, format="json")
    # then it is a 400 naming the field, and nothing changed
    assert r.status_code == 400, r.content
    assert r.json()["error"]["code"] == "invalid"
    assert field in r.json()["error"]["details"]
    assert review_state() == before
    assert AuditEvent.objects.count() == events
    assert ReviewItem.objects.get(id=item).status == ItemStatus.LEASED


@pytest.mark.django_db
def test_a_body_that_is_not_an_object_is_400(work):
    holder = make_client("holder", "reviewer")
    before = review_state()
    r = holder.post(f"/api/v1/reviews/{work['item']}/decide/", [work["token"]], format="json")
    assert r.status_code == 400, r.content
    assert review_state() == before


@pytest.mark.django_db
def test_an_unknown_status_filter_on_the_escalation_list_is_400(work):
    manager = make_client("mgr", "escalation_manager")
    before = review_state()
    r = manager.get("/api/v1/escalations/", {"status": "bogus"})
    assert r.status_code == 400, r.content
    assert "status" in r.json()["error"]["details"]
    assert review_state() == before


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/reviews/99999999999999999999/heartbeat/",
        "/api/v1/reviews/0/heartbeat/",
        "/api/v1/escalations/99999999999999999999/claim/",
    ],
)
@pytest.mark.django_db
def test_an_id_out_of_range_is_404_not_500(work, path):
    manager = make_client("mgr", "escalation_manager")
    r = manager.post(path, {"lease_token": work["token"]}, format="json")
    assert r.status_code == 404, r.content


@pytest.mark.django_db
def test_the_escalation_list_takes_the_same_queries_for_one_escalation_or_many(ready_items):
    manager = make_client("mgr", "escalation_manager", queues=["default"])
    reviewer = make_user("rev-1")

    def escalate(n: int) -> None:
        for item_id in ready_items(n, prefix=f"esc-{Escalation.objects.count()}"):
            claimed = review_item_claim(user=reviewer)
            assert claimed.id == item_id
            review_item_escalate(
                user=reviewer, item_id=item_id, token=claimed.lease_token, reason="x"
            )

    def list_queries() -> tuple[int, int]:
        with CaptureQueriesContext(connection) as queries:
            r = manager.get("/api/v1/escalations/", {"status": "open"})
        assert r.status_code == 200
        return len(queries), len(r.json()["results"])

    escalate(1)
    one = list_queries()
    escalate(5)
    six = list_queries()
    assert (one[1], six[1]) == (1, 6)
    assert one[0] == six[0]
