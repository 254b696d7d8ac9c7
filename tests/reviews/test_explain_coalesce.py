"""A worker's explanation run takes on the backlog of its model: one SHAP call and one
store for what many small messages named; the later messages find nothing to do."""

import pytest
from django.utils import timezone

from apps.explanations.models import Explanation
from apps.reviews.models import ExplanationStatus, ItemStatus, ReviewItem
from apps.reviews.tasks import explain_items
from reviewqueue.celery import app
from tests.factories import prediction_body


@pytest.fixture
def as_a_worker():
    """Run tasks as a worker with a broker does (not inline in the request)."""
    app.conf.task_always_eager = False
    yield
    app.conf.task_always_eager = True


def post_waiting(producer_client, prefix: str, n: int) -> list[int]:
    """Routed predictions whose explanation work has not run (no commit callbacks)."""
    items = [prediction_body(f"{prefix}-{i}", context={"amount": 20000}) for i in range(n)]
    r = producer_client.post("/api/v1/predictions/", {"items": items}, format="json")
    assert r.status_code == 200, r.content
    return [answer["review_item"] for answer in r.json()["results"]]


def waiting(item_ids: list[int]) -> set[int]:
    return set(
        ReviewItem.objects.filter(
            id__in=item_ids, explanation_status=ExplanationStatus.PENDING
        ).values_list("id", flat=True)
    )


@pytest.mark.django_db
def test_a_worker_run_explains_the_backlog_and_later_messages_find_it_done(
    producer_client, registered_model, as_a_worker
):
    # given three messages' worth of waiting items, one of which another run reserved
    first, second, third = (post_waiting(producer_client, p, 4) for p in ("a", "b", "c"))
    reserved = third[0]
    ReviewItem.objects.filter(id=reserved).update(explanation_requested_at=timezone.now())
    # when a worker runs the first message
    explain_items.apply(kwargs={"item_ids": first})
    # then the first message's items and the unreserved backlog are explained and
    # claimable, the backlog stamped as requested; the reserved item is left alone
    everything = first + second + third
    assert waiting(everything) == {reserved}
    assert Explanation.objects.count() == len(everything) - 1
    assert not ReviewItem.objects.filter(id__in=second, explanation_requested_at=None).exists()
    assert set(
        ReviewItem.objects.filter(id__in=first + second).values_list("status", flat=True)
    ) == {ItemStatus.READY}
    # when the later messages arrive, twice each (redelivery)
    for _ in range(2):
        explain_items.apply(kwargs={"item_ids": second})
        explain_items.apply(kwargs={"item_ids": third})
    # then the second changed nothing, the third explained only its reserved item
    assert waiting(everything) == set()
    assert Explanation.objects.count() == len(everything)
    assert Explanation.objects.filter(prediction__review_item__id=reserved).count() == 1


@pytest.mark.django_db
def test_in_process_a_run_explains_only_what_it_was_given(producer_client, registered_model):
    # given two requests' worth of waiting items and tasks that run inline (no broker)
    first, second = post_waiting(producer_client, "x", 3), post_waiting(producer_client, "y", 3)
    # when the first request's work runs
    explain_items.apply(kwargs={"item_ids": first})
    # then only its items are explained: a request does not do others' work
    assert waiting(first + second) == set(second)
