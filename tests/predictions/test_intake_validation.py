"""Every bad prediction is a 4xx naming the field, and stores nothing."""

import json

import pytest
from django.test import override_settings

from apps.predictions.models import Prediction
from apps.reviews.models import ReviewItem
from tests.factories import model_spec, prediction_body

URL = "/api/v1/predictions/"
FEATURES = {"income": 52000, "region": "n", "age": 41, "homeowner": False}


def with_features(**changes):
    features = dict(FEATURES)
    for name, value in changes.items():
        if value is ...:
            features.pop(name)
        else:
            features[name] = value
    return prediction_body(features=features)


def with_prediction(label="approve", **probabilities):
    return prediction_body(prediction={"label": label, "probabilities": probabilities})


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (with_features(income=...), "features.income"),
        (with_features(colour="red"), "features.colour"),
        (with_features(income="52000"), "features.income"),
        (with_features(income=True), "features.income"),
        (with_features(income=None), "features.income"),
        (with_features(income=[1]), "features.income"),
        (with_features(region="w"), "features.region"),
        (with_features(region=1), "features.region"),
        (with_features(homeowner="yes"), "features.homeowner"),
        (with_features(homeowner=0), "features.homeowner"),
        (prediction_body(features=[1, 2]), "features"),
        (with_prediction("maybe", approve=0.5, deny=0.5), "prediction.label"),
        (with_prediction(approve=0.5, deny=0.6), "prediction.probabilities"),
        (with_prediction(approve=0.5), "prediction.probabilities.deny"),
        (with_prediction(approve=0.5, deny=0.5, maybe=0.0), "prediction.probabilities.maybe"),
        (with_prediction(approve=1.5, deny=-0.5), "prediction.probabilities.approve"),
        (with_prediction(approve="0.5", deny=0.5), "prediction.probabilities.approve"),
        (prediction_body(prediction={"label": "approve"}), "prediction.probabilities"),
        (prediction_body(prediction=None), "prediction"),
        (prediction_body(external_id=""), "external_id"),
        (prediction_body(external_id=17), "external_id"),
        (prediction_body(external_id="x" * 201), "external_id"),
        (prediction_body(external_id="nul\x00byte"), "external_id"),
        (prediction_body(context=[1]), "context"),
        (prediction_body(context={"note": "nul\x00"}), "context.note"),
        (prediction_body(context={"note": "\ud800"}), "context.note"),
        (prediction_body(external_id="lone-\udc00"), "external_id"),
        (prediction_body(model=None), "model"),
        (prediction_body(surprise=1), "surprise"),
        (prediction_body(attributions=None), "attributions"),
        (
            prediction_body(attributions={"base_value": 0, "values": {"income": 1}}),
            "attributions.values.region",
        ),
        (
            prediction_body(attributions={"base_value": "x", "values": {}}),
            "attributions.base_value",
        ),
    ],
)
def test_bad_predictions_are_400_naming_the_field(producer_client, registered_model, body, field):
    # when a prediction with one bad field is sent (as JSON with ASCII escapes)
    r = producer_client.post(URL, json.dumps(body), content_type="application/json")
    # then it is refused with the field named, and nothing is stored
    assert r.status_code == 400, r.content
    error = r.json()["error"]
    assert error["code"] == "invalid"
    assert field in error["details"], error
    assert not Prediction.objects.exists()
    assert not ReviewItem.objects.exists()


@pytest.mark.parametrize(
    ("literal", "field"),
    [
        ('{"income": NaN, "region": "n", "age": 1, "homeowner": true}', "features.income"),
        ('{"income": Infinity, "region": "n", "age": 1, "homeowner": true}', "features.income"),
        ('{"income": -Infinity, "region": "n", "age": 1, "homeowner": true}', "features.income"),
        ('{"income": 1e999, "region": "n", "age": 1, "homeowner": true}', "features.income"),
    ],
)
def test_non_finite_numbers_are_400_naming_the_field(
    producer_client, registered_model, literal, field
):
    # given a body as Python's json.dumps writes NaN and infinities
    body = json.dumps(prediction_body()).replace(json.dumps(prediction_body()["features"]), literal)
    # when it is sent
    r = producer_client.post(URL, body, content_type="application/json")
    # then the field is named
    assert r.status_code == 400
    assert field in r.json()["error"]["details"]
    assert not Prediction.objects.exists()


def test_non_finite_context_values_are_refused(producer_client, registered_model):
    body = json.dumps(prediction_body()).replace('"amount": 500', '"amount": NaN')
    r = producer_client.post(URL, body, content_type="application/json")
    assert r.status_code == 400
    assert "context.amount" in r.json()["error"]["details"]


def test_precomputed_attributions_are_refused_for_other_explainers(admin_client, producer_client):
    spec = model_spec(
        name="linear",
        explainer={
            "kind": "linear",
            "coef": [1, 2, 3, 4],
            "intercept": 0.5,
            "background_mean": [0, 0, 0, 0],
        },
    )
    assert admin_client.post("/api/v1/models/", spec, format="json").status_code == 201
    r = producer_client.post(URL, prediction_body(model="linear:3"), format="json")
    assert r.status_code == 400
    assert "attributions" in r.json()["error"]["details"]


def test_an_unknown_model_is_404(producer_client, registered_model):
    r = producer_client.post(URL, prediction_body(model="nope:1"), format="json")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"


def test_malformed_json_is_400(producer_client, registered_model):
    r = producer_client.post(URL, '{"model": ', content_type="application/json")
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "malformed_body"


def test_deeply_nested_json_is_400_not_500(producer_client, registered_model):
    r = producer_client.post(URL, "[" * 100_000 + "]" * 100_000, content_type="application/json")
    assert r.status_code == 400


def test_a_json_array_body_is_400(producer_client, registered_model):
    r = producer_client.post(URL, [prediction_body()], format="json")
    assert r.status_code == 400


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_wrong_content_types_are_415(producer_client, registered_model, content_type):
    r = producer_client.generic("POST", URL, json.dumps(prediction_body()), content_type)
    assert r.status_code == 415
    assert r.json()["error"]["code"] == "unsupported_media_type"
    assert not Prediction.objects.exists()


@override_settings(MAX_BODY_BYTES=1000)
def test_an_oversized_body_is_413(producer_client, registered_model):
    # the middleware reads its limit when the handler is built, so build a fresh one
    from django.test import Client

    client = Client(HTTP_AUTHORIZATION=f"Token {producer_client.token}")
    body = json.dumps({"items": [prediction_body(f"id-{i}") for i in range(20)]})
    r = client.post(URL, body, content_type="application/json")
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "body_too_large"
    assert not Prediction.objects.exists()


@pytest.mark.parametrize(
    ("output", "base_value", "adds_up"),
    [
        ("probability", 0.5, True),
        ("probability", 0.4, False),
        ("log_odds", 0.0, False),
        ("log_odds", 2.313635, True),
    ],
)
def test_precomputed_attributions_must_add_up_to_the_model_output(
    admin_client, producer_client, output, base_value, adds_up
):
    # given a precomputed model declaring its output space
    spec = model_spec(
        name="pre", explainer={"kind": "precomputed", "output": output, "tolerance": 1e-4}
    )
    assert admin_client.post("/api/v1/models/", spec, format="json").status_code == 201
    # when attributions sum to base_value + 0.41 (p(approve) = 0.91, log-odds 2.3136)
    values = {"income": 0.2, "region": 0.11, "age": 0.1, "homeowner": 0.0}
    if output == "log_odds":
        values = {"income": 0.0, "region": 0.0, "age": 0.0, "homeowner": 0.0}
    body = prediction_body(model="pre:3", attributions={"base_value": base_value, "values": values})
    r = producer_client.post(URL, body, format="json")
    # then they are accepted only when they add up within the stated tolerance
    assert r.status_code == (201 if adds_up else 400), r.content
    if not adds_up:
        assert "attributions" in r.json()["error"]["details"]
        assert not Prediction.objects.exists()
