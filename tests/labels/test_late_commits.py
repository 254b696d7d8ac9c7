"""The feed against late commits, on real PostgreSQL: 16 writers decide concurrently,
some holding their transaction open for seconds after it took its id, while a
follower pages the feed. Once the writers stop, the follower has every label once."""

import random
import threading
import time

import pytest
from django.db import connection, transaction

from apps.reviews.models import Decision
from apps.reviews.services.decisions import review_item_decide
from apps.reviews.services.leases import review_item_claim
from tests.factories import make_items, make_user
from tests.helpers import read_page, run_in_threads

pytestmark = pytest.mark.django_db(transaction=True)

WRITERS = 16
DECISIONS_EACH = 6


def test_a_follower_gets_every_label_exactly_once_while_transactions_commit_late(
    model_version, pipeline_client
):
    make_items(model_version=model_version, n=WRITERS * DECISIONS_EACH)
    reviewers = [make_user(f"writer-{i}", "reviewer") for i in range(WRITERS)]
    commits: list[int] = []  # transaction ids, in the order they committed
    commits_lock = threading.Lock()
    writing = threading.Event()
    writing.set()

    def writer(index: int) -> None:
        rng = random.Random(index)
        for _ in range(DECISIONS_EACH):
            item = review_item_claim(user=reviewers[index])
            assert item is not None
            with transaction.atomic():
                with connection.cursor() as cursor:  # take the transaction id now...
                    cursor.execute("SELECT pg_current_xact_id()::text::bigint")
                    txid = cursor.fetchone()[0]
                if index % 3 == 0:  # ...and commit seconds later, behind younger ones
                    time.sleep(rng.choice([0.2, 0.8, 2.0]))
                review_item_decide(
                    user=reviewers[index],
                    item_id=item.id,
                    token=str(item.lease_token),
                    label="approve",
                )
                if index % 5 == 1:  # hold the decided row uncommitted a while
                    time.sleep(rng.choice([0.1, 0.4]))
            with commits_lock:
                commits.append(txid)

    seen: list[str] = []
    cursor = None

    def follow_once() -> int:
        nonlocal cursor
        status, page, cursor = read_page(pipeline_client, after=cursor, limit=5)
        assert status == 200
        seen.extend(label["cursor"] for label in page)
        return len(page)

    errors: list[BaseException] = []

    def write_all() -> None:
        try:
            run_in_threads(writer, [(i,) for i in range(WRITERS)])
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            writing.clear()

    writers = threading.Thread(target=write_all)
    writers.start()
    while writing.is_set():
        follow_once()
        time.sleep(0.01)
    writers.join()
    assert not errors, errors
    while follow_once():
        pass

    expected = {f"{txid}.{pk}" for txid, pk in Decision.objects.values_list("txid", "id")}
    assert len(expected) == WRITERS * DECISIONS_EACH
    assert len(seen) == len(set(seen)), "a label was delivered twice"
    assert set(seen) == expected, "a label was lost"
    # The hazard was real: transactions committed out of the order of their ids, so a
    # feed that remembered the highest id it had served would have skipped some.
    assert commits != sorted(commits)
