"""The demo setup command and the landing page, on the real PostgreSQL."""

import io
import math

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from apps.accounts.roles import user_roles
from apps.operations.management.commands.demo_setup import (
    DEMO_ACCOUNTS,
    REASON_CODES,
    model_train,
    prediction_items,
)
from apps.predictions.models import Prediction
from apps.queues.services import queue_get_or_create
from apps.registry.models import ModelVersion, ReasonCode
from apps.reviews.models import ItemStatus, ReviewItem

pytestmark = pytest.mark.django_db

N_ROWS = 569  # rows in scikit-learn's breast cancer dataset


def run_demo_setup() -> str:
    out = io.StringIO()
    call_command("demo_setup", stdout=out)
    return out.getvalue()


@pytest.fixture
def demo(django_capture_on_commit_callbacks):
    """The demo set up once, its after-commit work run as it is outside a test."""
    with django_capture_on_commit_callbacks(execute=True):
        return run_demo_setup()


def test_demo_setup_registers_the_model_and_sends_every_row(demo):
    # given the demo set up on an empty database (the fixture)
    # then the model is registered with its labels in output order and one sensitive feature
    model = ModelVersion.objects.get(name="breast-cancer", version="1")
    assert model.labels == ["malignant", "benign"]
    assert model.explainer == {"kind": "lightgbm"}
    assert model.artifact_sha256
    assert len(model.features) == 30
    assert [f["name"] for f in model.features if f["sensitive"]] == ["mean_texture"]
    # and every row arrived as a prediction
    predictions = Prediction.objects.filter(model_version=model)
    assert predictions.count() == N_ROWS
    # and some, not all, wait for review, each with one review item in the model's queue
    routed = predictions.filter(routed=True)
    assert 0 < routed.count() < N_ROWS
    items = ReviewItem.objects.filter(prediction__in=routed)
    assert items.count() == routed.count()
    assert set(items.values_list("queue__name", flat=True)) == {"default"}
    assert set(items.values_list("status", flat=True)) == {ItemStatus.READY}
    # and the output reports it
    assert f"created {N_ROWS}, duplicates 0, errors 0" in demo
    assert f"routed to review {routed.count()}" in demo
    assert "http://127.0.0.1:8000/api/docs/" in demo


def test_demo_setup_routes_for_every_kind_of_reason(demo):
    # given the demo set up (the fixture)
    # when the stored reasons are gathered
    reasons = {r for rs in Prediction.objects.values_list("reasons", flat=True) for r in rs}
    # then the policy's rules, low confidence and the audit sample all routed something
    assert reasons == {"low_confidence", "large_tumour", "referral", "audit_sample"}


def test_demo_setup_creates_an_account_per_role_with_a_working_token(demo):
    # given the demo set up (the fixture)
    for username, role in DEMO_ACCOUNTS:
        # when the printed token is used
        token = next(line.split()[-1] for line in demo.splitlines() if line.startswith(username))
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        # then it authenticates as an account holding that role
        # (a pipeline reads labels and nothing else; every other role may read models)
        path = "/api/v1/labels/" if role == "pipeline" else "/api/v1/models/"
        response = client.get(path)
        assert response.status_code == 200, (username, response.content)
        assert role in user_roles(response.wsgi_request.user)


def test_demo_setup_gives_the_model_reason_codes_and_prints_the_accounts_last(demo):
    # given the demo set up (the fixture)
    # then the model has the demo's override reasons, active
    codes = ReasonCode.objects.filter(model_name="breast-cancer", active=True)
    assert set(codes.values_list("code", flat=True)) == {code for code, _ in REASON_CODES}
    # and the output ends with the accounts and where to log in
    last = demo.splitlines()[-12:]
    assert any(line.startswith("demo-reviewer") for line in last)
    assert "log in at http://127.0.0.1:8000/login/" in demo


def test_demo_setup_run_again_duplicates_nothing(demo):
    # given the demo set up once (the fixture)
    items_before = set(ReviewItem.objects.values_list("id", flat=True))
    # when it runs again
    output = run_demo_setup()
    # then the model is reused and every prediction comes back as a duplicate
    assert "already registered, reused" in output
    assert f"created 0, duplicates {N_ROWS}, errors 0" in output
    assert ModelVersion.objects.count() == 1
    assert Prediction.objects.count() == N_ROWS
    assert set(ReviewItem.objects.values_list("id", flat=True)) == items_before


def test_demo_predictions_are_the_models_own_and_sum_to_one():
    # given the demo's model
    trained = model_train()
    # when its predictions are built
    items = prediction_items(trained=trained, model_ref="breast-cancer:1")
    # then each is the model's label with probabilities that sum to 1
    assert len(items) == N_ROWS
    assert items[0]["external_id"] == "bc-0000"
    for item in items:
        probabilities = item["prediction"]["probabilities"]
        assert abs(math.fsum(probabilities.values()) - 1.0) <= 1e-6
        assert item["prediction"]["label"] == max(probabilities, key=probabilities.get)
    # and training again gives the very same model, which reruns depend on
    assert model_train().artifact == trained.artifact


def test_landing_page_shows_queues_counts_and_models(client, demo, django_assert_num_queries):
    # given the demo set up (the fixture)
    routed = Prediction.objects.filter(routed=True).count()
    # when anyone, logged in or not, opens the landing page
    with django_assert_num_queries(3):
        response = client.get("/")
    # then it lists the queue with its items by status
    assert response.status_code == 200
    html = response.content.decode()
    (queue,) = response.context["queues"]
    assert queue["name"] == "default"
    assert queue["total"] == routed
    ready = list(ItemStatus.values).index(ItemStatus.READY)
    assert queue["counts"][ready] == routed
    assert '<th scope="row">default</th>' in html
    assert f'<td class="num">{routed}</td>' in html
    # and the predictions routed and auto-accepted, and the model version
    assert response.context["routed"] == routed
    assert response.context["auto_accepted"] == N_ROWS - routed
    assert f"<dd>{N_ROWS - routed}</dd>" in html
    assert "breast-cancer:1" in html
    # and links to the API docs and the admin
    assert 'href="/api/docs/"' in html
    assert 'href="/admin/"' in html


def test_landing_page_works_on_an_empty_database(client):
    # given nothing at all
    # when the landing page is opened
    response = client.get("/")
    # then it answers, and says there is nothing yet
    assert response.status_code == 200
    assert "No queues yet" in response.content.decode()
    assert "No model registered yet" in response.content.decode()


def test_landing_page_escapes_names(client):
    # given queues whose names are markup (made directly: the API refuses such names)
    queue_get_or_create(name="<b>q</b>")
    queue_get_or_create(name='"><script>alert(1)</script>')
    # when the landing page is opened
    html = client.get("/").content.decode()
    # then the names appear escaped, never as markup
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "<b>q</b>" not in html
    assert "&lt;b&gt;q&lt;/b&gt;" in html
