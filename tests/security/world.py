"""A seeded world for the security tests.

Two queues, ``default`` and ``foreign``. ``members`` holds an account per role, each a
member of ``default`` only (the admin is staff and sees everything); ``outsiders``
holds the same roles as members of ``foreign`` only. In each queue there are a model
version routing to it, a producer's prediction, ready items, an item leased to that
queue's reviewer, an open and a claimed escalation, a decided item (a label) and an
export. ``world.own`` names the objects of ``default``, ``world.foreign`` those of
``foreign``: for a member, every ``foreign`` object belongs to someone else's queue
(or, for predictions and exports, to another account) and must answer 404.
"""

from dataclasses import dataclass, field
from typing import Any

from rest_framework.test import APIClient

from apps.labels.services import ExportRequest, export_create
from apps.registry.models import ModelVersion, ReasonCode
from apps.reviews.services.decisions import review_item_decide, review_item_escalate
from apps.reviews.services.escalations import escalation_claim
from apps.reviews.services.leases import review_item_claim
from tests.factories import ROLES, make_client, make_items, model_spec, prediction_body

QUEUES = ("default", "foreign")


@dataclass
class World:
    members: dict[str, APIClient]
    outsiders: dict[str, APIClient]
    own: dict[str, Any] = field(default_factory=dict)
    foreign: dict[str, Any] = field(default_factory=dict)

    def objects(self, side: str) -> dict[str, Any]:
        return self.own if side == "own" else self.foreign


def _seed_queue(queue: str, clients: dict[str, APIClient], n: int) -> dict[str, Any]:
    admin, producer = clients["admin"], clients["producer"]
    name = "credit-default" if queue == "default" else "credit-foreign"
    spec = model_spec(name=name, routing={**model_spec()["routing"], "queue": queue})
    model = admin.post("/api/v1/models/", spec, format="json")
    assert model.status_code == 201, model.content
    ref = f"{name}:3"
    version = ModelVersion.objects.get(id=model.json()["id"])
    ReasonCode.objects.get_or_create(model_name=name, code="policy")
    prediction = producer.post(
        "/api/v1/predictions/", prediction_body(f"{queue}-p", model=ref), format="json"
    )
    assert prediction.status_code == 201, prediction.content
    make_items(model_version=version, n=n, prefix=f"{queue}-item")

    reviewer = clients["reviewer"].user
    manager = clients["escalation_manager"].user
    # Claims take the earliest due first: these four come from the items just made.
    decided = review_item_claim(user=reviewer, queue=queue)
    review_item_decide(
        user=reviewer,
        item_id=decided.id,
        token=decided.lease_token,
        label="deny",
        reason_code="policy",
    )
    escalated = []
    for _ in range(2):
        item = review_item_claim(user=reviewer, queue=queue)
        review_item_escalate(
            user=reviewer, item_id=item.id, token=item.lease_token, reason="needs_second_look"
        )
        escalated.append(item.id)
    leased = review_item_claim(user=reviewer, queue=queue)
    escalations = {e.item_id: e for e in _escalations(escalated)}
    claimed = escalation_claim(user=manager, escalation_id=escalations[escalated[1]].id)
    export = export_create(user=clients["pipeline"].user, request=ExportRequest(format="jsonl"))
    return {
        "model": model.json()["id"],
        "model_ref": ref,
        "prediction": prediction.json()["id"],
        "external_id": f"{queue}-p",
        "item": leased.id,
        "lease_token": str(leased.lease_token),
        "decided_item": decided.id,
        "escalation": escalations[escalated[0]].id,
        "claimed_escalation": claimed.id,
        "escalation_lease_token": str(claimed.lease_token) if claimed.lease_token else None,
        "export": str(export.id),
    }


def _escalations(item_ids):
    from apps.reviews.models import Escalation

    return Escalation.objects.filter(item_id__in=item_ids)


def world_seed() -> World:
    """Seed the world in the current database (for fixtures of a wider scope)."""
    members = {role: make_client(f"member-{role}", role, queues=["default"]) for role in ROLES}
    outsiders = {role: make_client(f"outsider-{role}", role, queues=["foreign"]) for role in ROLES}
    w = World(members=members, outsiders=outsiders)
    w.own = _seed_queue("default", members, n=8)
    w.foreign = _seed_queue("foreign", outsiders, n=8)
    return w


def write_calls(world: World) -> list[tuple[str, APIClient, str, dict]]:
    """Every JSON write endpoint of the API, for members of ``default``: ``(name,
    client, path, a valid body)``. Each body would succeed as it is."""
    own, members = world.own, world.members
    item, token = own["item"], own["lease_token"]
    manager = members["escalation_manager"]
    claimed = own["claimed_escalation"]
    lease = {"lease_token": own["escalation_lease_token"]}
    return [
        ("models", members["admin"], "/api/v1/models/", model_spec(name="attack-model")),
        (
            "predictions",
            members["producer"],
            "/api/v1/predictions/",
            prediction_body("attack-1", model=own["model_ref"]),
        ),
        (
            "predictions-bulk",
            members["producer"],
            "/api/v1/predictions/",
            {"items": [prediction_body("attack-2", model=own["model_ref"])]},
        ),
        ("claim", members["reviewer"], "/api/v1/queue/claim/", {"queue": "default"}),
        (
            "heartbeat",
            members["reviewer"],
            f"/api/v1/reviews/{item}/heartbeat/",
            {"lease_token": token},
        ),
        (
            "release",
            members["reviewer"],
            f"/api/v1/reviews/{item}/release/",
            {"lease_token": token},
        ),
        (
            "decide",
            members["reviewer"],
            f"/api/v1/reviews/{item}/decide/",
            {"lease_token": token, "label": "approve", "comment": "fine"},
        ),
        (
            "escalate",
            members["reviewer"],
            f"/api/v1/reviews/{item}/escalate/",
            {"lease_token": token, "reason": "unclear_case", "comment": "why"},
        ),
        (
            "escalation-resolve",
            manager,
            f"/api/v1/escalations/{claimed}/resolve/",
            {"label": "deny", "comment": "resolved", **lease},
        ),
        (
            "escalation-return",
            manager,
            f"/api/v1/escalations/{claimed}/return/",
            {"comment": "back", **lease},
        ),
        ("exports", members["pipeline"], "/api/v1/exports/", {"format": "jsonl"}),
    ]
