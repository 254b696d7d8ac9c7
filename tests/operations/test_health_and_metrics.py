"""Health, metrics, the OpenAPI schema and docs, and the error body for every 4xx."""

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from tests.factories import prediction_body


@pytest.mark.django_db
def test_healthz_reports_database_and_broker_without_auth():
    r = APIClient().get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"database": "ok", "broker": "embedded"}


@pytest.mark.django_db
@override_settings(CELERY_BROKER_URL="redis://127.0.0.1:1/0")
def test_healthz_stays_200_with_the_broker_down():
    r = APIClient().get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"database": "ok", "broker": "unavailable"}


def test_metrics_are_prometheus_text(producer_client, registered_model):
    producer_client.post("/api/v1/predictions/", prediction_body(), format="json")
    producer_client.post(
        "/api/v1/predictions/", prediction_body("b", context={"amount": 10**6}), format="json"
    )
    r = APIClient().get("/metrics")
    assert r.status_code == 200
    assert r["Content-Type"].startswith("text/plain")
    text = r.content.decode()
    assert 'reviewqueue_predictions_total{model="credit-default:3",routed="false"} 1.0' in text
    assert 'reviewqueue_review_items{queue="default",status="pending"} 1.0' in text


@pytest.mark.django_db
@override_settings(REVIEW_METRICS_TOKEN="metrics-secret")
def test_metrics_can_require_a_bearer_token():
    assert APIClient().get("/metrics").status_code == 401
    r = APIClient().get("/metrics", HTTP_AUTHORIZATION="Bearer metrics-secret")
    assert r.status_code == 200


@pytest.mark.django_db
def test_the_schema_describes_the_contract_paths_and_docs_render():
    schema = APIClient().get("/api/schema/?format=json").json()
    for path in (
        "/api/v1/models/",
        "/api/v1/models/{ref}/",
        "/api/v1/predictions/",
        "/api/v1/predictions/{prediction_id}/",
    ):
        assert path in schema["paths"], path
    docs = APIClient().get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()


@pytest.mark.django_db
def test_unknown_paths_and_methods_answer_the_error_body(admin_client):
    r = admin_client.get("/api/v1/nothing-here/")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    r = admin_client.delete("/api/v1/models/")
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.django_db
def test_healthz_reports_a_live_broker(settings):
    settings.CELERY_BROKER_URL = settings.TEST_REDIS_URL
    assert APIClient().get("/healthz").json() == {"database": "ok", "broker": "ok"}
