"""Time-driven behaviour under a controlled clock: lease expiry, repeated abandonment,
SLA breaches and escalation claim expiry. The periodic tasks are called directly, each
twice: a second run at the same moment must change nothing."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_chain_verify
from apps.core.exceptions import Conflict
from apps.reviews.models import (
    Escalation,
    EscalationStatus,
    ItemStatus,
    ReviewItem,
)
from apps.reviews.services.decisions import review_item_decide, review_item_escalate
from apps.reviews.services.escalations import (
    escalation_claim,
    escalation_resolve,
    escalation_return,
)
from apps.reviews.services.leases import EXPIRY_BATCH, review_item_claim
from apps.reviews.tasks import escalate_sla_breaches, expire_leases
from tests.factories import lease_each_to_its_own_reviewer, make_client, make_user
from tests.helpers import review_state

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def review(item_id: int, action: str) -> str:
    return f"/api/v1/reviews/{item_id}/{action}/"


def run_twice(task) -> None:
    """Run a periodic task, then again at the same moment: the second run is a no-op."""
    task()
    after_first = (review_state(), AuditEvent.objects.count())
    task()
    assert (review_state(), AuditEvent.objects.count()) == after_first


@pytest.mark.django_db
def test_expire_leases_returns_an_expired_item_and_the_old_token_is_409(ready_items, settings):
    # given an item claimed through the API at T0
    (item_id,) = ready_items(1)
    reviewer = make_client("rev-1", "reviewer")
    lease = timedelta(seconds=settings.REVIEW_LEASE_SECONDS)
    with time_machine.travel(T0, tick=False) as clock:
        claimed = reviewer.post("/api/v1/queue/claim/").json()
        token = claimed["lease"]["token"]
        # when the task runs a second before the lease runs out, nothing happens
        clock.shift(lease - timedelta(seconds=1))
        run_twice(expire_leases)
        assert ReviewItem.objects.get(id=item_id).status == ItemStatus.LEASED
        # when the lease runs out without a heartbeat and the task runs (twice)
        clock.shift(timedelta(seconds=1))
        run_twice(expire_leases)
        # then the item is back in the queue, its lease cleared and its expiry counted
        item = ReviewItem.objects.get(id=item_id)
        assert item.status == ItemStatus.READY
        assert (item.lease_token, item.leased_by_id, item.lease_expires_at) == (None, None, None)
        assert item.lease_expiries == 1
        event = AuditEvent.objects.filter(item_id=item_id).latest("id")
        assert (event.action, event.actor_id, event.at) == ("lease_expired", None, T0 + lease)
        assert event.data == {"holder_id": reviewer.user.id, "expiries": 1}
        # and the old token answers 409 on every call, changing nothing
        before = review_state()
        for action, extra in (
            ("heartbeat", {}),
            ("release", {}),
            ("decide", {"label": "approve"}),
            ("escalate", {"reason": "unclear"}),
        ):
            r = reviewer.post(review(item_id, action), {"lease_token": token, **extra}, "json")
            assert r.status_code == 409, (action, r.content)
            assert r.json()["error"]["code"] == "lease_lost"
        assert review_state() == before
        # and the item is claimable again
        assert review_item_claim(user=make_user("rev-2")).id == item_id
    assert audit_chain_verify()[1] is None


@pytest.mark.django_db
def test_the_fifth_expiry_escalates_the_item_as_repeated_abandonment(ready_items, settings):
    assert settings.REVIEW_MAX_LEASE_EXPIRIES == 5
    (item_id,) = ready_items(1, due_at=T0 + timedelta(minutes=30))
    step = timedelta(seconds=settings.REVIEW_LEASE_SECONDS + 1)
    with time_machine.travel(T0, tick=False) as clock:
        for expiry in range(1, 6):
            # given the item claimed by yet another reviewer, who walks away
            assert review_item_claim(user=make_user(f"rev-{expiry}")).id == item_id
            clock.shift(step)
            # when the lease runs out and the task runs
            run_twice(expire_leases)
            item = ReviewItem.objects.get(id=item_id)
            assert item.lease_expiries == expiry
            if expiry < 5:
                # then the first four times it goes back to the queue
                assert item.status == ItemStatus.READY
                assert not Escalation.objects.exists()
        # then the fifth time it is escalated, lease cleared, for managers to see
        assert item.status == ItemStatus.ESCALATED
        assert item.lease_token is None and item.leased_by_id is None
        escalation = Escalation.objects.get()
        assert escalation.item_id == item_id
        assert escalation.reason == "repeated_abandonment"
        assert escalation.status == EscalationStatus.OPEN
        assert escalation.raised_by_id is None
        assert escalation.raised_at == T0 + 5 * step
        late = (T0 + 5 * step - (T0 + timedelta(minutes=30))).total_seconds()
        assert escalation.lateness_seconds == late
        # and nobody can claim it for review any more
        assert review_item_claim(user=make_user("rev-6")) is None
    actions = list(AuditEvent.objects.values_list("action", flat=True))
    assert actions.count("lease_expired") == 5
    assert actions[-2:] == ["lease_expired", "escalated"]
    assert AuditEvent.objects.get(action="escalated").data == {"reason": "repeated_abandonment"}


@pytest.fixture
def sla_items(ready_items):
    """Items due at T0 + a few minutes in every state the SLA check must consider.

    ``ready``, ``leased`` and ``pending`` ones are due at T0+10, +20, +30 minutes;
    ``at_t1`` is due exactly at T1 = T0+1h, ``later`` at T0+2h; ``decided`` and
    ``escalated`` (by a reviewer) are due at T0+5 minutes.
    """
    reviewer = make_user("rev-1")
    items = {}

    def minutes(m: int) -> datetime:
        return T0 + timedelta(minutes=m)

    with time_machine.travel(T0, tick=False):
        (items["decided"],) = ready_items(1, prefix="decided", due_at=minutes(5))
        token = review_item_claim(user=reviewer).lease_token
        review_item_decide(user=reviewer, item_id=items["decided"], token=token, label="approve")
        (items["escalated"],) = ready_items(1, prefix="escalated", due_at=minutes(5))
        token = review_item_claim(user=reviewer).lease_token
        review_item_escalate(user=reviewer, item_id=items["escalated"], token=token, reason="odd")
        (items["leased"],) = ready_items(1, prefix="leased", due_at=minutes(20))
        items["leased_token"] = review_item_claim(user=reviewer).lease_token
        (items["ready"],) = ready_items(1, prefix="ready", due_at=minutes(10))
        (items["pending"],) = ready_items(
            1, prefix="pending", due_at=minutes(30), status=ItemStatus.PENDING
        )
        (items["at_t1"],) = ready_items(1, prefix="at-t1", due_at=minutes(60))
        (items["later"],) = ready_items(1, prefix="later", due_at=minutes(120))
    items["reviewer"] = reviewer
    return items


@pytest.mark.django_db
def test_sla_breaches_escalate_the_overdue_undecided_items_once(sla_items):
    t1 = T0 + timedelta(hours=1)
    breached = {"ready": 10, "leased": 20, "pending": 30}  # minutes after T0 they were due
    untouched = ["decided", "escalated", "at_t1", "later"]
    before = {
        name: ReviewItem.objects.values("status", "sla_breached_at").get(id=sla_items[name])
        for name in untouched
    }
    with time_machine.travel(t1, tick=False):
        # when the periodic check runs an hour after T0 (twice)
        run_twice(escalate_sla_breaches)
        # then each overdue undecided item is escalated, as late as it was
        for name, due_minute in breached.items():
            item = ReviewItem.objects.get(id=sla_items[name])
            assert item.status == ItemStatus.ESCALATED, name
            assert item.sla_breached_at == t1
            assert (item.lease_token, item.leased_by_id, item.lease_expires_at) == (
                None,
                None,
                None,
            )
            (escalation,) = Escalation.objects.filter(item_id=item.id)
            assert escalation.reason == "sla_breach"
            assert escalation.status == EscalationStatus.OPEN
            assert escalation.raised_by_id is None
            assert escalation.raised_at == t1
            assert escalation.lateness_seconds == (60 - due_minute) * 60.0
        # and the items not yet due (or due this very instant), decided, or already
        # escalated by a reviewer are left alone
        for name in untouched:
            state = ReviewItem.objects.values("status", "sla_breached_at").get(id=sla_items[name])
            assert state == before[name], name
        assert not Escalation.objects.filter(
            item_id__in=[sla_items[n] for n in untouched], reason="sla_breach"
        ).exists()
        # and the reviewer who held the overdue item has lost the lease
        with pytest.raises(Conflict) as refused:
            review_item_decide(
                user=sla_items["reviewer"],
                item_id=sla_items["leased"],
                token=sla_items["leased_token"],
                label="approve",
            )
        assert refused.value.code == "lease_lost"
    events = AuditEvent.objects.filter(action="escalated", data__reason="sla_breach")
    assert sorted(events.values_list("item_id", "actor_id")) == sorted(
        (sla_items[name], None) for name in breached
    )
    leased_event = events.get(item_id=sla_items["leased"])
    assert leased_event.data == {
        "reason": "sla_breach",
        "lateness_seconds": 40 * 60.0,
        "holder_id": sla_items["reviewer"].id,
    }
    assert audit_chain_verify()[1] is None


@pytest.mark.django_db
def test_an_sla_escalation_returned_by_a_manager_is_not_escalated_again(sla_items):
    manager = make_user("mgr", "escalation_manager")
    with time_machine.travel(T0 + timedelta(hours=1), tick=False) as clock:
        run_twice(escalate_sla_breaches)
        # given a manager returns the overdue ready item to the queue
        escalation = Escalation.objects.get(item_id=sla_items["ready"], reason="sla_breach")
        escalation_return(user=manager, escalation_id=escalation.id, comment="fine, review it")
        assert ReviewItem.objects.get(id=sla_items["ready"]).status == ItemStatus.READY
        # when the check runs again, now and later (when "later" is overdue too)
        run_twice(escalate_sla_breaches)
        clock.shift(timedelta(hours=2))
        run_twice(escalate_sla_breaches)
        # then the returned item stays in the queue: its breach was escalated once
        assert ReviewItem.objects.get(id=sla_items["ready"]).status == ItemStatus.READY
        assert Escalation.objects.filter(item_id=sla_items["ready"]).count() == 1
        # while the item that became overdue since is escalated
        later = Escalation.objects.get(item_id=sla_items["later"])
        assert later.reason == "sla_breach"
        assert later.lateness_seconds == 3600.0
        # and the returned item can be claimed and decided
        reviewer = make_user("rev-2")
        claimed = review_item_claim(user=reviewer)
        assert claimed.id == sla_items["ready"]
        review_item_decide(
            user=reviewer, item_id=claimed.id, token=claimed.lease_token, label="approve"
        )


@pytest.fixture
def open_escalation(ready_items):
    (item_id,) = ready_items(1)
    reviewer = make_user("rev-1")
    with time_machine.travel(T0, tick=False):
        token = review_item_claim(user=reviewer).lease_token
        review_item_escalate(user=reviewer, item_id=item_id, token=token, reason="unclear")
    return Escalation.objects.get(item_id=item_id)


@pytest.mark.django_db
def test_an_expired_escalation_claim_is_reopened_and_another_manager_claims_it(
    open_escalation, settings
):
    first, second = (
        make_user("mgr-1", "escalation_manager"),
        make_user("mgr-2", "escalation_manager"),
    )
    lease = timedelta(seconds=settings.REVIEW_LEASE_SECONDS)
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False) as clock:
        # given a manager claimed the escalation
        claimed = escalation_claim(user=first, escalation_id=open_escalation.id)
        assert claimed.status == EscalationStatus.CLAIMED
        old_token = claimed.lease_token
        # and while the claim is live, nobody else may take it
        with pytest.raises(Conflict):
            escalation_claim(user=second, escalation_id=open_escalation.id)
        clock.shift(lease - timedelta(seconds=1))
        run_twice(expire_leases)
        assert Escalation.objects.get().status == EscalationStatus.CLAIMED
        # when the claim runs out and the task runs (twice)
        clock.shift(timedelta(seconds=1))
        run_twice(expire_leases)
        # then the escalation is open again, its claim cleared, the item still escalated
        escalation = Escalation.objects.get()
        assert escalation.status == EscalationStatus.OPEN
        assert (escalation.claimed_by_id, escalation.lease_token) == (None, None)
        assert escalation.lease_expires_at is None
        assert ReviewItem.objects.get().status == ItemStatus.ESCALATED
        event = AuditEvent.objects.latest("id")
        assert (event.action, event.actor_id, event.item_id) == (
            "escalation_lease_expired",
            None,
            escalation.item_id,
        )
        assert event.data == {"escalation_id": escalation.id, "holder_id": first.id}
        # and another manager can claim it, and resolve it
        reclaimed = escalation_claim(user=second, escalation_id=escalation.id)
        assert (reclaimed.status, reclaimed.claimed_by_id) == (EscalationStatus.CLAIMED, second.id)
        # while the first manager's old claim no longer holds it
        with pytest.raises(Conflict) as refused:
            escalation_resolve(
                user=first, escalation_id=escalation.id, label="deny", token=old_token
            )
        assert refused.value.code == "escalation_not_held"
        resolved = escalation_resolve(
            user=second, escalation_id=escalation.id, label="deny", token=reclaimed.lease_token
        )
        assert resolved.status == EscalationStatus.RESOLVED
        assert resolved.closed_by_id == second.id
    assert audit_chain_verify()[1] is None


@pytest.mark.django_db
def test_expire_leases_handles_more_expired_leases_than_one_batch(ready_items, settings):
    # given more expired leases than one batch of the task
    n = EXPIRY_BATCH + 1
    item_ids = ready_items(n, due_at=T0 + timedelta(days=1))
    lease_each_to_its_own_reviewer(item_ids, expires_at=T0)
    with time_machine.travel(T0, tick=False):
        # when the task runs (twice)
        run_twice(expire_leases)
    # then every one of them is back in the queue, each expiry recorded once
    assert set(ReviewItem.objects.values_list("status", "lease_expiries")) == {
        (ItemStatus.READY, 1)
    }
    assert AuditEvent.objects.filter(action="lease_expired").count() == n


@pytest.mark.django_db
def test_escalate_sla_breaches_handles_more_overdue_items_than_one_batch(ready_items):
    # given more overdue items than one batch, and one that is not due yet
    n = EXPIRY_BATCH + 1
    overdue = ready_items(n, due_at=T0 - timedelta(hours=1), due_step=timedelta(0))
    (on_time,) = ready_items(1, prefix="on-time", due_at=T0 + timedelta(seconds=1))
    with time_machine.travel(T0, tick=False):
        # when the task runs (twice)
        run_twice(escalate_sla_breaches)
    # then each overdue item has exactly one sla_breach escalation, an hour late
    assert set(Escalation.objects.values_list("item_id", "reason", "lateness_seconds")) == {
        (item_id, "sla_breach", 3600.0) for item_id in overdue
    }
    assert Escalation.objects.count() == n
    assert ReviewItem.objects.get(id=on_time).status == ItemStatus.READY
