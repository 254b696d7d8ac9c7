"""The audit trail: one hash chain that concurrent writers cannot fork, that
PostgreSQL keeps append-only, whose tampering ``audit_verify`` finds, and that every
state change writes to in its own transaction."""

import io
import json
import re
from collections.abc import Callable
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.db.models import Max

from apps.audit.chain import GENESIS
from apps.audit.models import Action, AuditEvent
from apps.audit.services import Event, audit_record
from apps.core.exceptions import Conflict
from apps.registry.models import ModelVersion, ReasonCode
from apps.reviews.models import Decision, Escalation, ItemStatus, ReviewItem
from apps.reviews.services.decisions import review_item_decide, review_item_escalate
from apps.reviews.services.escalations import (
    escalation_claim,
    escalation_resolve,
    escalation_return,
    escalations_expire_claims,
    review_items_escalate_sla_breaches,
)
from apps.reviews.services.leases import (
    review_item_claim,
    review_item_release,
    review_items_expire_leases,
)
from tests.factories import make_client, make_items, make_user
from tests.helpers import review_state, run_in_threads

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def items(registered_model) -> Callable[..., list[int]]:
    model_version = ModelVersion.objects.get(id=registered_model["id"])

    def make(n: int, **kwargs: Any) -> list[int]:
        return make_items(model_version=model_version, n=n, **kwargs)

    return make


def audit_verify() -> str:
    out = io.StringIO()
    call_command("audit_verify", stdout=out)
    return out.getvalue()


def some_events(n: int) -> list[AuditEvent]:
    user = make_user("someone")
    for i in range(n):
        audit_record(event=Event(Action.DENIED, user, data={"i": i}), at=T0 + timedelta(seconds=i))
    return list(AuditEvent.objects.order_by("id"))


# Concurrent writers


def write_through_services(user_id: int) -> int:
    """Claim and release an item, claim and decide one, and record a refusal; the
    number of events written."""
    user = User.objects.get(id=user_id)
    item = review_item_claim(user=user)
    review_item_release(user=user, item_id=item.id, token=item.lease_token)
    item = review_item_claim(user=user)
    review_item_decide(user=user, item_id=item.id, token=item.lease_token, label="approve")
    audit_record(event=Event(Action.DENIED, user, data={"path": "/x/"}), at=T0)
    return 5


@pytest.mark.django_db(transaction=True)
def test_32_concurrent_writers_make_one_unbroken_chain(items):
    # given 32 ready items and 32 reviewers
    items(32)
    reviewers = [make_user(f"rev-{i:02}").id for i in range(32)]
    # when each reviewer changes state through the services, all at once
    written = run_in_threads(write_through_services, [(r,) for r in reviewers])
    # then every event is there, and audit_verify checks them all
    total = AuditEvent.objects.count()
    assert total == sum(written) == 160
    assert audit_verify().strip() == f"audit chain verified: {total} events"
    assert Decision.objects.count() == 32
    # and the events form one chain in id order: each follows the one before, no fork
    chain = list(AuditEvent.objects.order_by("id").values_list("prev_hash", "hash"))
    assert chain[0][0] == GENESIS
    assert all(prev == chain[i - 1][1] for i, (prev, _) in enumerate(chain) if i)
    prev_hashes = [prev for prev, _ in chain]
    assert len(set(prev_hashes)) == len(prev_hashes)


# Append-only


@pytest.mark.django_db
def test_postgresql_refuses_update_and_delete_of_audit_events():
    # given a few events
    events = some_events(3)
    before = list(AuditEvent.objects.order_by("id").values())
    target = events[1]
    attempts = [
        lambda: AuditEvent.objects.filter(id=target.id).update(data={"forged": True}),
        lambda: AuditEvent.objects.filter(id=target.id).delete(),
        lambda: AuditEvent.objects.all().delete(),
        lambda: connection.cursor().execute(
            "UPDATE audit_auditevent SET actor = 'someone-else' WHERE id = %s", [target.id]
        ),
        lambda: connection.cursor().execute("DELETE FROM audit_auditevent"),
    ]
    for attempt in attempts:
        # when something tries to change or remove them
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            attempt()
    # then the database refused each, and every row is as it was
    assert list(AuditEvent.objects.order_by("id").values()) == before
    assert audit_verify().strip() == "audit chain verified: 3 events"


@contextmanager
def triggers_bypassed():
    """What a superuser can do: switch triggers off for the session."""
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        try:
            yield cursor
        finally:
            cursor.execute("SET session_replication_role = origin")


def forge_data(cursor, event: AuditEvent) -> None:
    cursor.execute(
        "UPDATE audit_auditevent SET data = %s WHERE id = %s",
        [json.dumps({"i": 999}), event.id],
    )


def forge_data_and_rehash(cursor, event: AuditEvent) -> None:
    """A better forger: edits the data and recomputes the event's own hash."""
    from apps.audit.chain import event_hash

    digest = event_hash(
        prev_hash=event.prev_hash,
        at=event.at,
        actor_id=event.actor_id,
        actor=event.actor,
        action=event.action,
        item_id=event.item_id,
        prediction_id=event.prediction_id,
        data={"i": 999},
    )
    cursor.execute(
        "UPDATE audit_auditevent SET data = %s, hash = %s WHERE id = %s",
        [json.dumps({"i": 999}), digest, event.id],
    )


def remove(cursor, event: AuditEvent) -> None:
    cursor.execute("DELETE FROM audit_auditevent WHERE id = %s", [event.id])


@pytest.mark.parametrize(
    ("forgery", "broken_offset", "problem"),
    [
        (forge_data, 0, "content does not match its hash"),
        (forge_data_and_rehash, 1, "does not follow its predecessor"),
        (remove, 1, "does not follow its predecessor"),
    ],
)
@pytest.mark.django_db
def test_audit_verify_names_the_first_event_a_superuser_tampered_with(
    forgery, broken_offset, problem
):
    # given a verified chain of seven events
    events = some_events(7)
    assert audit_verify().strip() == "audit chain verified: 7 events"
    # when a superuser bypasses the trigger and tampers with the fourth one
    with triggers_bypassed() as cursor:
        forgery(cursor, events[3])
    # then audit_verify fails, naming the first event that no longer checks out and
    # its position (the tampered one, or the one after it when its hash was redone or
    # it was removed; a removed event leaves the next one at the removed one's place)
    broken = events[3 + broken_offset]
    position = 4 + (broken_offset if forgery is not remove else 0)
    expected = f"audit chain broken at event {broken.id} (position {position} of the chain)"
    with pytest.raises(CommandError, match=re.escape(expected)) as failed:
        audit_verify()
    assert problem in str(failed.value)


# Every state change writes its event in its own transaction


@contextmanager
def audit_inserts_failing():
    """Make PostgreSQL refuse every new audit event, as a full disk or a lost lock would."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION test_audit_insert_refused() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'audit insert refused for the test'; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER test_audit_insert_refused BEFORE INSERT ON audit_auditevent "
            "FOR EACH ROW EXECUTE FUNCTION test_audit_insert_refused()"
        )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER test_audit_insert_refused ON audit_auditevent")
            cursor.execute("DROP FUNCTION test_audit_insert_refused()")


def state() -> tuple:
    return review_state(), list(Decision.objects.values()), AuditEvent.objects.count()


def audited(change: Callable[[], Any], expected: list[tuple]) -> Any:
    """Run ``change`` while audit events cannot be written: it must fail and leave no
    trace (the change and its event are one transaction). Then run it for real: it
    must write exactly the ``expected`` (action, actor id, item id, prediction id)."""
    before = state()
    with audit_inserts_failing(), pytest.raises(DatabaseError, match="audit insert refused"):
        change()
    assert state() == before
    last = AuditEvent.objects.aggregate(last=Max("id"))["last"] or 0
    result = change()
    new = AuditEvent.objects.filter(id__gt=last).order_by("id")
    assert list(new.values_list("action", "actor_id", "item_id", "prediction_id")) == expected
    return result


def pred(item_id: int) -> int:
    return ReviewItem.objects.values_list("prediction_id", flat=True).get(id=item_id)


@pytest.mark.django_db
def test_claim_release_accept_and_override_each_write_their_event_atomically(items):
    first, second = items(2)
    ReasonCode.objects.create(model_name="credit-default", code="income_misread")
    reviewer = make_user("rev-1")
    uid = reviewer.id
    # claim
    claimed = audited(
        lambda: review_item_claim(user=reviewer), [("claimed", uid, first, pred(first))]
    )
    assert claimed.id == first
    # release
    audited(
        lambda: review_item_release(user=reviewer, item_id=first, token=claimed.lease_token),
        [("released", uid, first, pred(first))],
    )
    # accept
    claimed = review_item_claim(user=reviewer)
    audited(
        lambda: review_item_decide(
            user=reviewer, item_id=first, token=claimed.lease_token, label="approve"
        ),
        [("decided", uid, first, pred(first))],
    )
    # override
    claimed = review_item_claim(user=reviewer)
    assert claimed.id == second
    audited(
        lambda: review_item_decide(
            user=reviewer,
            item_id=second,
            token=claimed.lease_token,
            label="deny",
            reason_code="income_misread",
        ),
        [("overridden", uid, second, pred(second))],
    )
    assert AuditEvent.objects.get(action="overridden").data == {
        "label": "deny",
        "model_label": "approve",
        "source": "reviewer",
        "reason_code": "income_misread",
    }
    assert audit_verify().startswith("audit chain verified")


@pytest.mark.django_db
def test_escalate_and_the_escalation_claim_resolve_return_each_write_their_event_atomically(
    items,
):
    first, second = items(2)
    reviewer, manager = make_user("rev-1"), make_user("mgr", "escalation_manager")
    # escalate
    claimed = review_item_claim(user=reviewer)
    audited(
        lambda: review_item_escalate(
            user=reviewer, item_id=first, token=claimed.lease_token, reason="suspected_fraud"
        ),
        [("escalated", reviewer.id, first, pred(first))],
    )
    escalation = Escalation.objects.get(item_id=first)
    # escalation claim
    held = audited(
        lambda: escalation_claim(user=manager, escalation_id=escalation.id),
        [("escalation_claimed", manager.id, first, pred(first))],
    )
    # escalation return
    audited(
        lambda: escalation_return(
            user=manager, escalation_id=escalation.id, comment="ok", token=held.lease_token
        ),
        [("escalation_returned", manager.id, first, pred(first))],
    )
    assert ReviewItem.objects.get(id=first).status == ItemStatus.READY
    # escalation resolve: the decision, then the resolution, in one transaction
    claimed = review_item_claim(user=reviewer)
    assert claimed.id == first
    review_item_escalate(user=reviewer, item_id=first, token=claimed.lease_token, reason="again")
    escalation = Escalation.objects.get(item_id=first, status="open")
    audited(
        lambda: escalation_resolve(user=manager, escalation_id=escalation.id, label="deny"),
        [
            ("overridden", manager.id, first, pred(first)),
            ("escalation_resolved", manager.id, first, pred(first)),
        ],
    )
    assert Decision.objects.get(item_id=first).source == "escalation"
    assert second not in Decision.objects.values_list("item_id", flat=True)


@pytest.mark.django_db
def test_lease_expiry_sla_breach_and_escalation_claim_expiry_write_their_events_atomically(
    items, settings
):
    lease = timedelta(seconds=settings.REVIEW_LEASE_SECONDS)
    (abandoned,) = items(1, prefix="abandoned", due_at=T0 + timedelta(hours=4))
    (overdue,) = items(1, prefix="overdue", due_at=T0 + timedelta(hours=1), status="pending")
    reviewer, manager = make_user("rev-1"), make_user("mgr", "escalation_manager")
    with time_machine.travel(T0, tick=False) as clock:
        review_item_claim(user=reviewer)
        # lease expiry, by the system
        clock.shift(lease)
        audited(
            lambda: review_items_expire_leases(now=T0 + lease),
            [("lease_expired", None, abandoned, pred(abandoned))],
        )
        # sla breach, by the system
        clock.shift(timedelta(hours=2))
        audited(
            lambda: review_items_escalate_sla_breaches(),
            [("escalated", None, overdue, pred(overdue))],
        )
        # escalation claim expiry, by the system
        escalation = Escalation.objects.get(item_id=overdue)
        escalation_claim(user=manager, escalation_id=escalation.id)
        clock.shift(lease)
        audited(
            lambda: escalations_expire_claims(),
            [("escalation_lease_expired", None, overdue, pred(overdue))],
        )
    assert Escalation.objects.get(item_id=overdue).status == "open"


@pytest.mark.parametrize("role", ["pipeline", "producer"])
@pytest.mark.django_db
def test_a_claim_by_a_role_that_may_not_review_is_403_and_audited_as_denied(items, role):
    # given a ready item
    items(1)
    client = make_client(f"user-{role}", role)
    before = review_state()
    # when a pipeline or producer account tries to claim it
    r = client.post("/api/v1/queue/claim/")
    # then it is refused, nothing changes, and the refusal is on record
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "permission_denied"
    assert review_state() == before
    denied = AuditEvent.objects.get(action="denied")
    assert (denied.actor_id, denied.actor, denied.item_id) == (
        client.user.id,
        f"user-{role}",
        None,
    )
    assert denied.data == {"method": "POST", "path": "/api/v1/queue/claim/"}
    assert audit_verify().strip() == "audit chain verified: 1 events"


@pytest.mark.django_db
def test_a_refused_change_writes_no_event(items):
    # given an item leased by one reviewer
    (item_id,) = items(1)
    holder, other = make_user("rev-1"), make_user("rev-2")
    claimed = review_item_claim(user=holder)
    events = AuditEvent.objects.count()
    # when another reviewer tries the holder's token
    with pytest.raises(Conflict, match="lease"):
        review_item_decide(user=other, item_id=item_id, token=claimed.lease_token, label="approve")
    # then nothing is recorded, as nothing changed
    assert AuditEvent.objects.count() == events
