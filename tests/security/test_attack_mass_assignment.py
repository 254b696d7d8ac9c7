"""Mass assignment: server-owned fields sent by a client on every write endpoint.

Strict bodies (a model spec, a prediction, a batch) refuse an unknown field with 400
naming it, and store nothing. The review and export endpoints read only their declared
fields: the call does what it would have done without the extras, and the stored rows
carry the server's values (who acted, when, which state), never the client's.
"""

import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone

from apps.labels.models import ExportJob
from apps.reviews.models import Decision, Escalation, ReviewItem
from tests.helpers import database_state
from tests.security.world import write_calls

pytestmark = pytest.mark.django_db

LONG_AGO = "2001-01-01T00:00:00Z"
FAR_AHEAD = "2099-01-01T00:00:00Z"


def server_owned(world) -> dict:
    """Fields a client must never set, with values that would help an attacker."""
    outsider = world.outsiders["reviewer"].user
    return {
        "id": 1,
        "status": "decided",
        "routed": False,
        "reasons": [],
        "review_item": world.foreign["item"],
        "created_at": LONG_AGO,
        "decided_at": LONG_AGO,
        "raised_at": LONG_AGO,
        "closed_at": LONG_AGO,
        "source": "escalation",
        "overridden": True,
        "reviewer": outsider.username,
        "decided_by": outsider.id,
        "raised_by": outsider.id,
        "closed_by": outsider.id,
        "claimed_by": outsider.id,
        "owner": outsider.id,
        "producer": outsider.id,
        "created_by": outsider.id,
        "leased_by": outsider.id,
        "rows": 10**9,
        "total": 10**9,
        "progress": 1.0,
        "download_url": "https://attacker.example/labels.jsonl",
        "file_name": "../../../etc/passwd",
        "expires_at": FAR_AHEAD,
        "lease_expires_at": FAR_AHEAD,
        "lease": {"token": str(uuid.uuid4()), "expires_at": FAR_AHEAD},
        "lateness_seconds": 0,
        "priority": 10**6,
        "due_at": FAR_AHEAD,
        "is_staff": True,
        "is_superuser": True,
        "queue": "foreign",
        "content_hash": "0" * 64,
        "selection_probability": 1.0,
        "final": {"label": "deny", "source": "model", "decided_at": LONG_AGO},
        "artifact_sha256": "0" * 64,
        "ref": "credit-default:3",
    }


# Fields that the strict bodies declare themselves (so they are not extras there).
DECLARED = {"models": {"queue"}, "predictions": set(), "predictions-bulk": set()}


@pytest.mark.parametrize("name", ["models", "predictions", "predictions-bulk"])
def test_strict_bodies_refuse_every_server_owned_field(world, name):
    [(_, client, path, body)] = [c for c in write_calls(world) if c[0] == name]
    before = database_state()
    for field, value in server_owned(world).items():
        if field in DECLARED[name]:
            continue
        if name == "predictions-bulk":
            sent = {"items": [{**body["items"][0], field: value}]}
            r = client.post(path, sent, format="json")
            assert r.status_code == 200, r.content
            [answer] = r.json()["results"]
            assert field in answer["error"]["details"], (field, answer)
            # and beside `items`, a batch takes nothing at all
            r = client.post(path, {**body, field: value}, format="json")
            assert r.status_code == 400 and field in r.json()["error"]["details"], field
        else:
            r = client.post(path, {**body, field: value}, format="json")
            assert r.status_code == 400, (field, r.content)
            assert field in r.json()["error"]["details"], (field, r.json())
        assert database_state() == before, field


def test_a_feature_or_routing_policy_cannot_smuggle_fields_either(world):
    client, spec = world.members["admin"], write_calls(world)[0][3]
    before = database_state()
    for where in ("features", "explainer", "routing"):
        tampered = dict(spec)
        if where == "features":
            tampered["features"] = [{**spec["features"][0], "sensitive": False, "id": 1}]
        else:
            tampered[where] = {**spec[where], "created_by": 1, "is_staff": True}
        r = client.post("/api/v1/models/", tampered, format="json")
        assert r.status_code == 400, (where, r.content)
    assert database_state() == before


def _call(world, name: str, extra: dict):
    [(_, client, path, body)] = [c for c in write_calls(world) if c[0] == name]
    r = client.post(path, {**extra, **body}, format="json")
    assert r.status_code in (200, 202), (name, r.content)
    return client, r.json()


def test_a_decision_records_the_reviewer_and_the_time_not_the_clients(world):
    extra = server_owned(world)
    client, answer = _call(world, "decide", extra)
    decision = Decision.objects.get(item_id=world.own["item"])
    assert decision.decided_by_id == client.user.id
    assert decision.source == "reviewer" and decision.overridden is False
    assert abs(decision.decided_at - timezone.now()) < timedelta(minutes=1)
    item = ReviewItem.objects.get(id=world.own["item"])
    assert (item.status, item.queue.name) == ("decided", "default")
    assert answer["status"] == "decided"
    assert not User.objects.filter(id=client.user.id, is_staff=True).exists()


def test_an_escalation_records_who_raised_it_and_when(world):
    client, _ = _call(world, "escalate", server_owned(world))
    escalation = Escalation.objects.filter(item_id=world.own["item"]).latest("id")
    assert escalation.raised_by_id == client.user.id
    assert escalation.status == "open" and escalation.closed_by_id is None
    assert abs(escalation.raised_at - timezone.now()) < timedelta(minutes=1)


def test_a_heartbeat_extends_the_lease_by_the_servers_measure(world):
    client, answer = _call(world, "heartbeat", server_owned(world))
    item = ReviewItem.objects.get(id=world.own["item"])
    assert str(item.lease_token) == world.own["lease_token"]
    assert item.leased_by_id == client.user.id
    limit = timezone.now() + timedelta(seconds=settings.REVIEW_LEASE_SECONDS + 60)
    assert item.lease_expires_at < limit
    assert answer["lease"]["token"] == world.own["lease_token"]


def test_a_claim_hands_out_the_servers_token_and_queue(world):
    chosen = str(uuid.uuid4())
    extra = {**server_owned(world), "lease_token": chosen, "id": world.foreign["item"]}
    _, answer = _call(world, "claim", extra)
    assert answer["id"] == world.own["item"] and answer["queue"] == "default"
    assert answer["lease"]["token"] != chosen
    assert not ReviewItem.objects.filter(lease_token=chosen).exists()
    foreign = ReviewItem.objects.get(id=world.foreign["item"])
    assert foreign.leased_by_id == world.outsiders["reviewer"].user.id


def test_resolving_an_escalation_records_the_manager(world):
    client, answer = _call(world, "escalation-resolve", server_owned(world))
    escalation = Escalation.objects.get(id=world.own["claimed_escalation"])
    assert (escalation.status, escalation.closed_by_id) == ("resolved", client.user.id)
    assert abs(escalation.closed_at - timezone.now()) < timedelta(minutes=1)
    decision = Decision.objects.get(item_id=escalation.item_id)
    assert (decision.source, decision.decided_by_id) == ("escalation", client.user.id)
    assert answer["raised_by"] == world.members["reviewer"].user.username


def test_an_export_belongs_to_its_caller_with_the_servers_figures(world):
    client, answer = _call(world, "exports", server_owned(world))
    job = ExportJob.objects.get(id=answer["id"])
    assert job.owner_id == client.user.id
    assert job.rows < 10**9 and job.file_name != "../../../etc/passwd"
    assert abs(job.created_at - timezone.now()) < timedelta(minutes=1)
    if answer["download_url"] is not None:
        assert not answer["download_url"].startswith("https://attacker.example")
    # and the job is not the outsider's to see
    other = world.outsiders["pipeline"]
    assert other.get(f"/api/v1/exports/{job.id}/").status_code == 404


def test_release_and_return_take_nothing_but_their_fields(world):
    _, answer = _call(world, "release", server_owned(world))
    item = ReviewItem.objects.get(id=world.own["item"])
    assert (item.status, item.leased_by_id, item.lease_token) == ("ready", None, None)
    assert answer["lease"] is None
    manager, answer = _call(world, "escalation-return", server_owned(world))
    escalation = Escalation.objects.get(id=world.own["claimed_escalation"])
    assert (escalation.status, escalation.closed_by_id) == ("returned", manager.user.id)
