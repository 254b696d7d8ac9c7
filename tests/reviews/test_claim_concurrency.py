"""Claims under concurrency, against the real PostgreSQL: every thread has its own
connection, as every web process would. An item is handed to one reviewer at a time,
and a reviewer holds at most one item."""

import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_chain_verify
from apps.core.exceptions import Conflict
from apps.reviews.models import Decision, Escalation, ItemStatus, ReviewItem
from apps.reviews.services.decisions import review_item_decide, review_item_escalate
from apps.reviews.services.escalations import escalation_claim
from apps.reviews.services.leases import (
    review_item_claim,
    review_item_heartbeat,
    review_item_release,
)
from apps.reviews.tasks import expire_leases
from tests.factories import lease_each_to_its_own_reviewer, make_user
from tests.helpers import run_in_threads

N_ITEMS = 10_000
N_REVIEWERS = 64


def claim_and_decide_until_empty(user_id: int) -> list[int]:
    """One reviewer's loop: claim, accept, until the queue is empty; the items claimed."""
    user = User.objects.get(id=user_id)
    claimed = []
    while (item := review_item_claim(user=user)) is not None:
        claimed.append(item.id)
        review_item_decide(user=user, item_id=item.id, token=item.lease_token, label="approve")
    return claimed


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_64_reviewers_drain_10000_items_each_decided_exactly_once(ready_items):
    # given 10,000 ready items and 64 reviewers
    item_ids = ready_items(N_ITEMS)
    reviewers = [make_user(f"rev-{i:02}").id for i in range(N_REVIEWERS)]
    # when each reviewer claims and decides in its own thread until nothing is left
    started = time.monotonic()
    claims = run_in_threads(claim_and_decide_until_empty, [(r,) for r in reviewers])
    elapsed = time.monotonic() - started
    # then every item was claimed exactly once, by one reviewer
    claimed_by = Counter(item for items in claims for item in items)
    assert sorted(claimed_by) == sorted(item_ids)
    assert set(claimed_by.values()) == {1}
    holder = {item: r for r, items in zip(reviewers, claims, strict=True) for item in items}
    # and decided exactly once, by the reviewer who claimed it
    decisions = list(Decision.objects.values_list("item_id", "decided_by_id"))
    assert len(decisions) == N_ITEMS
    assert dict(decisions) == holder
    assert set(ReviewItem.objects.values_list("status", flat=True)) == {ItemStatus.DECIDED}
    # and the work was shared out rather than done by one thread
    assert sum(1 for items in claims if items) > 1
    # and the audit trail has one claim and one decision per item, in an unbroken chain
    events = Counter(AuditEvent.objects.values_list("action", flat=True))
    assert events == {"claimed": N_ITEMS, "decided": N_ITEMS}
    claim_events = AuditEvent.objects.filter(action="claimed")
    assert dict(claim_events.values_list("item_id", "actor_id")) == holder
    checked, broken = audit_chain_verify()
    assert (checked, broken) == (2 * N_ITEMS, None)
    print(f"64 reviewers drained {N_ITEMS} items in {elapsed:.1f}s")


@pytest.mark.django_db(transaction=True)
def test_two_reviewers_racing_for_one_item_exactly_one_gets_it(ready_items):
    alice, bob = make_user("alice").id, make_user("bob").id
    for round_ in range(20):
        # given exactly one ready item
        (item_id,) = ready_items(1, prefix=f"race-{round_}")
        barrier = threading.Barrier(2)

        def claim(user_id: int, barrier: threading.Barrier = barrier):
            user = User.objects.get(id=user_id)
            barrier.wait(timeout=30)
            return review_item_claim(user=user)

        # when two reviewers claim at the same moment
        results = run_in_threads(claim, [(alice,), (bob,)])
        # then exactly one of them holds it, and the other got nothing
        won = [r for r in results if r is not None]
        assert len(won) == 1, (round_, results)
        assert won[0].id == item_id
        item = ReviewItem.objects.get(id=item_id)
        assert item.status == ItemStatus.LEASED
        assert item.leased_by_id == won[0].leased_by_id
        assert AuditEvent.objects.filter(action="claimed", item_id=item_id).count() == 1
        # (the winner decides, so the next round starts with one ready item again)
        review_item_decide(
            user=User.objects.get(id=won[0].leased_by_id),
            item_id=item_id,
            token=won[0].lease_token,
            label="approve",
        )


@pytest.mark.django_db(transaction=True)
def test_the_same_reviewer_claiming_twice_at_once_gets_one_item_with_one_lease(ready_items):
    ready_items(2 * 20 + 1)
    reviewer = make_user("rev-1").id
    for round_ in range(20):
        # given a reviewer with no lease and several ready items
        barrier = threading.Barrier(2)

        def claim(user_id: int, barrier: threading.Barrier = barrier):
            user = User.objects.get(id=user_id)
            barrier.wait(timeout=30)
            return review_item_claim(user=user)

        # when the reviewer's two claims arrive at the same moment
        first, second = run_in_threads(claim, [(reviewer,), (reviewer,)])
        # then both answer the same item under the same lease, and one item is leased
        assert first is not None and second is not None, round_
        assert first.id == second.id, round_
        assert first.lease_token == second.lease_token, round_
        leased = ReviewItem.objects.filter(status=ItemStatus.LEASED)
        assert list(leased.values_list("id", flat=True)) == [first.id]
        assert AuditEvent.objects.filter(action="claimed", item_id=first.id).count() == 1
        review_item_decide(
            user=User.objects.get(id=reviewer),
            item_id=first.id,
            token=first.lease_token,
            label="approve",
        )


def _waiting_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.parametrize("n_ready", [2, 1])
@pytest.mark.django_db(transaction=True)
def test_a_second_claim_while_the_first_is_committing_gets_the_same_item(ready_items, n_ready):
    """The race above, made deterministic: the first claim is held open (it runs in
    its caller's transaction) while the second one runs. With another ready item, the
    second claim waits on the one-lease-per-reviewer index and hands back the first's
    item. With no other ready item it skips the row the first has locked, and must not
    answer "nothing ready" either: the reviewer is about to hold that very item."""
    # given ready items and a reviewer whose first claim has not committed yet
    item_id = ready_items(n_ready)[0]
    reviewer = make_user("rev-1").id
    first_claimed, commit_first = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def first() -> None:
        try:
            with transaction.atomic():
                results["first"] = review_item_claim(user=User.objects.get(id=reviewer))
                first_claimed.set()
                assert commit_first.wait(timeout=30)
        finally:
            connection.close()

    def second() -> None:
        try:
            results["second"] = review_item_claim(user=User.objects.get(id=reviewer))
        finally:
            connection.close()

    t1 = threading.Thread(target=first)
    t1.start()
    assert first_claimed.wait(timeout=30)
    # when the same reviewer claims again before the first claim commits
    t2 = threading.Thread(target=second)
    t2.start()
    deadline = time.monotonic() + 30
    while t2.is_alive() and not _waiting_on_a_lock() and time.monotonic() < deadline:
        t2.join(timeout=0.01)
    commit_first.set()
    t1.join(timeout=30)
    t2.join(timeout=30)
    # then both claims answer the item, under one lease
    assert results["first"].id == item_id
    assert results["second"] is not None, "the second claim answered 'nothing ready'"
    assert results["second"].id == item_id
    assert results["second"].lease_token == results["first"].lease_token


@pytest.fixture
def expired_and_reclaimed(ready_items, settings):
    """An item claimed by rev-1, whose lease expired, then claimed by rev-2."""
    (item_id,) = ready_items(1)
    first_user, second_user = make_user("rev-1"), make_user("rev-2")
    with time_machine.travel(timezone.now(), tick=False) as clock:
        first = review_item_claim(user=first_user)
        clock.shift(timedelta(seconds=settings.REVIEW_LEASE_SECONDS + 1))
        second = review_item_claim(user=second_user)
        assert second.id == first.id == item_id
        yield clock, (first_user, first), (second_user, second)


@pytest.mark.django_db
def test_a_late_decision_after_reclaim_is_lease_lost_and_the_second_decision_stands(
    expired_and_reclaimed,
):
    _, (first_user, first), (second_user, second) = expired_and_reclaimed
    # when the first reviewer's late decision arrives before the second one decides
    with pytest.raises(Conflict) as refused:
        review_item_decide(
            user=first_user, item_id=first.id, token=first.lease_token, label="approve"
        )
    # then it is refused and changed nothing: the second reviewer still holds the lease
    assert refused.value.code == "lease_lost"
    assert refused.value.status_code == 409
    item = ReviewItem.objects.get(id=first.id)
    assert (item.status, item.leased_by_id, item.lease_token) == (
        ItemStatus.LEASED,
        second_user.id,
        second.lease_token,
    )
    assert not Decision.objects.exists()
    # and the second reviewer's decision goes through and stands
    review_item_decide(
        user=second_user, item_id=second.id, token=second.lease_token, label="approve"
    )
    decision = Decision.objects.get()
    assert (decision.item_id, decision.decided_by_id, decision.label) == (
        first.id,
        second_user.id,
        "approve",
    )
    assert list(AuditEvent.objects.values_list("action", "actor_id")) == [
        ("claimed", first_user.id),
        ("lease_expired", None),
        ("claimed", second_user.id),
        ("decided", second_user.id),
    ]


@pytest.mark.django_db
def test_a_late_decision_after_the_second_reviewer_decided_changes_nothing(
    expired_and_reclaimed,
):
    _, (first_user, first), (second_user, second) = expired_and_reclaimed
    # given the second reviewer has decided
    review_item_decide(
        user=second_user, item_id=second.id, token=second.lease_token, label="approve"
    )
    events = AuditEvent.objects.count()
    # when the first reviewer's decision, release and heartbeat arrive with the old token
    late_calls = [
        lambda: review_item_decide(
            user=first_user, item_id=first.id, token=first.lease_token, label="approve"
        ),
        lambda: review_item_release(user=first_user, item_id=first.id, token=first.lease_token),
        lambda: review_item_heartbeat(user=first_user, item_id=first.id, token=first.lease_token),
    ]
    for call in late_calls:
        with pytest.raises(Conflict) as refused:
            call()
        # then each is refused
        assert refused.value.code == "lease_lost"
    # and the decision of the second stands, unchanged
    decision = Decision.objects.get()
    assert (decision.decided_by_id, decision.label) == (second_user.id, "approve")
    assert ReviewItem.objects.get(id=first.id).status == ItemStatus.DECIDED
    assert AuditEvent.objects.count() == events


@pytest.mark.django_db(transaction=True)
def test_two_managers_racing_for_one_escalation_exactly_one_gets_it(ready_items):
    managers = [make_user(f"mgr-{i}", "escalation_manager").id for i in range(2)]
    reviewer = make_user("rev-1")
    for round_ in range(10):
        # given one open escalation
        (item_id,) = ready_items(1, prefix=f"esc-{round_}")
        claimed = review_item_claim(user=reviewer)
        review_item_escalate(user=reviewer, item_id=item_id, token=claimed.lease_token, reason="x")
        escalation_id = Escalation.objects.get(item_id=item_id).id
        barrier = threading.Barrier(2)

        def claim(user_id: int, barrier: threading.Barrier = barrier, escalation_id=escalation_id):
            user = User.objects.get(id=user_id)
            barrier.wait(timeout=30)
            try:
                return escalation_claim(user=user, escalation_id=escalation_id).claimed_by_id
            except Conflict as exc:
                return exc.code

        # when two managers claim it at the same moment
        results = run_in_threads(claim, [(m,) for m in managers])
        # then one holds it and the other is told it is taken
        assert sorted(results, key=str) == sorted(
            [Escalation.objects.get(id=escalation_id).claimed_by_id, "escalation_not_claimable"],
            key=str,
        ), round_
        assert (
            AuditEvent.objects.filter(
                action="escalation_claimed", data__escalation_id=escalation_id
            ).count()
            == 1
        )


@pytest.mark.django_db(transaction=True)
def test_expiry_by_the_task_and_by_claims_at_once_counts_each_expired_lease_once(ready_items):
    # given 200 expired leases, each held by a reviewer who walked away
    start = timezone.now()
    item_ids = ready_items(200)
    lease_each_to_its_own_reviewer(item_ids, expires_at=start)
    with time_machine.travel(start + timedelta(seconds=1), tick=False):
        claimers = [make_user(f"rev-{i}").id for i in range(4)]
        barrier = threading.Barrier(8)

        def run_task() -> None:
            barrier.wait(timeout=30)
            expire_leases()

        def claim(user_id: int) -> int | None:
            user = User.objects.get(id=user_id)
            barrier.wait(timeout=30)
            item = review_item_claim(user=user)
            return item.id if item else None

        # when the periodic task (four workers) and four claims expire them at once
        results = run_in_threads(
            lambda who: run_task() if who is None else claim(who),
            [(None,)] * 4 + [(c,) for c in claimers],
        )
    # then each expired lease was handled exactly once
    assert set(ReviewItem.objects.values_list("lease_expiries", flat=True)) == {1}
    expired = AuditEvent.objects.filter(action="lease_expired")
    assert sorted(expired.values_list("item_id", flat=True)) == sorted(item_ids)
    # and the claims got different items (a claim may find nothing ready while the task
    # holds the rows it is returning: a 204 to retry), the rest are back in the queue
    claimed = [r for r in results[4:] if r is not None]
    assert len(set(claimed)) == len(claimed)
    leased = ReviewItem.objects.filter(status=ItemStatus.LEASED)
    assert sorted(leased.values_list("id", flat=True)) == sorted(claimed)
    assert set(leased.values_list("leased_by_id", flat=True)) <= set(claimers)
    assert ReviewItem.objects.filter(status=ItemStatus.READY).count() == 200 - len(claimed)
    assert audit_chain_verify()[1] is None
