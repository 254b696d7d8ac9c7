"""Prediction intake through the API, on the real PostgreSQL."""

import json
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from apps.predictions.models import Prediction
from apps.reviews.models import ItemStatus, ReviewItem
from tests.factories import make_client, model_spec, prediction_body

URL = "/api/v1/predictions/"


def post(client, body):
    return client.post(URL, body, format="json")


def test_a_confident_prediction_is_auto_accepted(producer_client, registered_model):
    # when a confident, low-risk prediction arrives
    r = post(producer_client, prediction_body())
    # then it goes through with no review item
    assert r.status_code == 201
    body = r.json()
    assert body == {
        "id": body["id"],
        "external_id": "app-1",
        "model": "credit-default:3",
        "status": "auto_accepted",
        "routed": False,
        "reasons": [],
        "review_item": None,
    }
    assert not ReviewItem.objects.exists()
    # and its final decision is the model's
    detail = producer_client.get(f"{URL}{body['id']}/").json()
    assert detail["status"] == "auto_accepted"
    assert detail["final"]["label"] == "approve"
    assert detail["final"]["source"] == "model"


def test_a_routed_prediction_gets_a_review_item_with_priority_and_due_time(
    producer_client, registered_model, django_capture_on_commit_callbacks
):
    # given a high amount (SLA PT1H) and low confidence (default SLA PT4H)
    before = timezone.now()
    body = prediction_body(
        context={"amount": 20000},
        prediction={"label": "deny", "probabilities": {"approve": 0.3, "deny": 0.7}},
    )
    # when it arrives (and its transaction commits)
    with django_capture_on_commit_callbacks(execute=True):
        r = post(producer_client, body)
    # then it waits for a human, for both reasons, due within the shorter SLA
    assert r.status_code == 201, r.content
    answer = r.json()
    assert answer["status"] == "pending_review"
    assert answer["routed"] is True
    assert answer["reasons"] == ["low_confidence", "high_amount"]
    item = ReviewItem.objects.get(id=answer["review_item"])
    assert item.prediction_id == answer["id"]
    assert item.queue.name == "default"
    assert before + timedelta(hours=1) <= item.due_at <= timezone.now() + timedelta(hours=1)
    assert item.priority == pytest.approx(1 + 0.3)
    # and the in-process explanation step made it claimable
    assert item.status == ItemStatus.READY
    prediction = Prediction.objects.get(id=answer["id"])
    assert prediction.selection_probability == 1.0
    detail = producer_client.get(f"{URL}{answer['id']}/").json()
    assert detail["status"] == "pending_review"
    assert detail["final"] is None
    assert detail["review_item"] == item.id


def test_an_audit_sample_records_its_selection_probability(admin_client, producer_client):
    # given a model that audits everything confident at rate 1.0
    spec = model_spec(name="audited", routing={"audit_rate": 1.0})
    assert admin_client.post("/api/v1/models/", spec, format="json").status_code == 201
    # when a confident prediction arrives
    r = post(producer_client, prediction_body(model="audited:3"))
    # then it is routed as an audit sample with probability 1.0 = audit_rate
    assert r.json()["reasons"] == ["audit_sample"]
    assert Prediction.objects.get().selection_probability == 1.0


def test_same_content_again_answers_200_with_the_first_answer(producer_client, registered_model):
    body = prediction_body(context={"amount": 20000})
    first = post(producer_client, body)
    # when the same prediction is sent again (numbers written differently)
    again_body = json.loads(json.dumps(body))
    again_body["features"]["income"] = 52000.0
    again = post(producer_client, again_body)
    # then the first answer comes back and nothing is duplicated
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json() == first.json()
    assert Prediction.objects.count() == 1
    assert ReviewItem.objects.count() == 1


def test_same_external_id_with_other_content_is_409(producer_client, registered_model):
    post(producer_client, prediction_body())
    r = post(producer_client, prediction_body(context={"amount": 1}))
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "duplicate_external_id"
    assert Prediction.objects.count() == 1


def test_same_external_id_from_another_producer_is_409(producer_client, registered_model):
    other = make_client("producer-2", "producer")
    post(producer_client, prediction_body())
    assert post(other, prediction_body()).status_code == 409


def test_a_bulk_of_1000_is_stored_in_one_request_with_one_round_trip_per_table(
    producer_client, registered_model
):
    # given 1,000 predictions, every fifth one in region s (routed)
    items = [
        prediction_body(
            f"bulk-{i}",
            features={
                "income": i,
                "region": "s" if i % 5 == 0 else "n",
                "age": 30,
                "homeowner": True,
            },
        )
        for i in range(1000)
    ]
    # when they are sent in one request
    with CaptureQueriesContext(connection) as queries:
        r = post(producer_client, {"items": items})
    # then every one is created, 200 routed, each with its review item
    assert r.status_code == 200, r.content
    body = r.json()
    assert (body["created"], body["duplicates"], body["errors"]) == (1000, 0, 0)
    assert [a["external_id"] for a in body["results"]] == [f"bulk-{i}" for i in range(1000)]
    assert sum(a["routed"] for a in body["results"]) == 200
    assert Prediction.objects.count() == 1000
    assert ReviewItem.objects.count() == 200
    # and the writes took one statement per table: predictions, review items, audit (on
    # PostgreSQL the audit events go in through one call of the function that appends them)
    sqls = [q["sql"] for q in queries.captured_queries]
    tables = [
        "audit_auditevent" if "audit_append_events(" in sql else sql.split()[2].strip('"')
        for sql in sqls
        if sql.startswith("INSERT") or "audit_append_events(" in sql
    ]
    assert sorted(tables) == ["audit_auditevent", "predictions_prediction", "reviews_reviewitem"]


def test_a_bulk_mixes_new_duplicates_conflicts_and_errors(producer_client, registered_model):
    post(producer_client, prediction_body("old"))
    items = [
        prediction_body("new-1"),
        prediction_body("old"),  # duplicate of a stored one
        prediction_body("old", context={"amount": 3}),  # conflict with it
        prediction_body(
            "bad", features={"income": "lots", "region": "n", "age": 1, "homeowner": True}
        ),
        prediction_body("new-1"),  # repeated within the batch
        prediction_body("new-2", context={"amount": 20000}),
        "not an object",
    ]
    r = post(producer_client, {"items": items})
    assert r.status_code == 200
    body = r.json()
    assert (body["created"], body["duplicates"], body["errors"]) == (2, 2, 3)
    results = body["results"]
    assert results[0]["status"] == "auto_accepted"
    assert results[1]["external_id"] == "old"
    assert results[2]["error"]["code"] == "duplicate_external_id"
    assert results[3]["error"]["details"] == {"features.income": "must be a number"}
    assert results[4] == results[0]
    assert results[5]["routed"] is True
    assert results[6]["error"]["code"] == "invalid"
    assert Prediction.objects.count() == 3


@pytest.mark.parametrize(
    "batch",
    [
        {"items": []},
        {"items": [prediction_body()] * 1001},
        {"items": "x"},
        {"items": [prediction_body()], "extra": 1},
    ],
)
def test_bad_batches_are_400_and_store_nothing(producer_client, registered_model, batch):
    r = post(producer_client, batch)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid"
    assert not Prediction.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_identical_posts_store_exactly_one_row(registered_model_tx):
    # given two producers' connections racing with the same prediction
    body = prediction_body("race", context={"amount": 20000})
    barrier = threading.Barrier(8)
    answers = []

    def send():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {registered_model_tx}")
        barrier.wait()
        answers.append(client.post(URL, body, format="json"))
        connection.close()

    # when eight threads post it at the same moment
    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # then exactly one row and one review item exist, one 201 and the rest 200s
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201]
    assert len({a.json()["id"] for a in answers}) == 1
    assert Prediction.objects.count() == 1
    assert ReviewItem.objects.count() == 1


@pytest.fixture
def registered_model_tx(transactional_db):
    """A registered model and a producer's token, committed for other connections."""
    admin = make_client("admin-tx", "admin")
    assert admin.post("/api/v1/models/", model_spec(), format="json").status_code == 201
    return make_client("producer-tx", "producer").token
