"""Registering and reading model versions."""

import base64
import json

import pytest
from django.test import override_settings

from apps.queues.models import Queue
from apps.registry.models import ModelVersion
from tests.factories import lightgbm_artifact, model_spec

URL = "/api/v1/models/"
LINEAR = {
    "kind": "linear",
    "coef": [0.1, 0.2, 0.3, 0.4],
    "intercept": -1.0,
    "background_mean": [1, 0, 40, 0],
}


def test_register_a_model_as_json(admin_client):
    # when an admin registers a model version
    r = admin_client.post(URL, model_spec(routing={"queue": "credit"}), format="json")
    # then it is stored as sent, with its queue created
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["ref"] == "credit-default:3"
    assert body["labels"] == ["approve", "deny"]
    assert body["features"][2] == {"name": "age", "type": "numeric", "sensitive": True}
    assert body["queue"] == "credit"
    assert Queue.objects.filter(name="credit").exists()
    # and it can be read by id and by name:version
    assert admin_client.get(f"{URL}{body['id']}/").json() == body
    assert admin_client.get(f"{URL}credit-default:3/").json() == body


def test_register_with_an_artifact_as_json_base64_and_as_multipart(admin_client):
    artifact = lightgbm_artifact()
    spec = model_spec(explainer={"kind": "lightgbm"})
    # as JSON, base64 in "artifact"
    r = admin_client.post(
        URL, {**spec, "artifact": base64.b64encode(artifact).decode()}, format="json"
    )
    assert r.status_code == 201, r.content
    assert bytes(ModelVersion.objects.get(version="3").artifact.data) == artifact
    # as multipart, a spec part and an artifact part
    from django.core.files.uploadedfile import SimpleUploadedFile

    r = admin_client.post(
        URL,
        {
            "spec": json.dumps({**spec, "version": "4"}),
            "artifact": SimpleUploadedFile("model.txt", artifact),
        },
        format="multipart",
    )
    assert r.status_code == 201, r.content
    stored = ModelVersion.objects.get(version="4")
    assert bytes(stored.artifact.data) == artifact
    assert r.json()["artifact_sha256"] == stored.artifact_sha256


def test_registering_the_same_version_twice_is_409(admin_client):
    assert admin_client.post(URL, model_spec(), format="json").status_code == 201
    r = admin_client.post(URL, model_spec(), format="json")
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "model_version_exists"
    assert ModelVersion.objects.count() == 1


def feature(i, **entry):
    features = model_spec()["features"]
    features[i] = entry
    return model_spec(features=features)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (model_spec(name="has:colon"), "name"),
        (model_spec(name=""), "name"),
        (model_spec(version=None), "version"),
        (model_spec(task="regression"), "task"),
        (model_spec(labels=["only"]), "labels"),
        (model_spec(labels=["a", "a"]), "labels"),
        (model_spec(labels="ab"), "labels"),
        (model_spec(features=[]), "features"),
        (feature(0, name="income", type="text"), "features.0.type"),
        (feature(1, name="region", type="categorical"), "features.1.categories"),
        (
            feature(1, name="region", type="categorical", categories=["a", "a"]),
            "features.1.categories",
        ),
        (feature(0, name="income", type="numeric", categories=["a"]), "features.0.categories"),
        (feature(0, name="region", type="numeric"), "features.1.name"),
        (feature(0, name="income", type="numeric", sensitive="yes"), "features.0.sensitive"),
        (feature(0, name="income", type="numeric", weight=2), "features.0.weight"),
        (model_spec(explainer={"kind": "magic"}), "explainer.kind"),
        (model_spec(explainer={"kind": "lightgbm"}), "artifact"),
        (model_spec(explainer={**LINEAR, "coef": [1, 2]}), "explainer.coef"),
        (model_spec(explainer={**LINEAR, "intercept": "x"}), "explainer.intercept"),
        (model_spec(explainer={**LINEAR, "background_mean": None}), "explainer.background_mean"),
        (model_spec(explainer={"kind": "precomputed", "output": "odds"}), "explainer.output"),
        (model_spec(explainer={"kind": "precomputed", "x": 1}), "explainer.x"),
        (model_spec(routing={"min_confidence": 3}), "routing.min_confidence"),
        (
            model_spec(
                routing={
                    "risk_rules": [
                        {"field": "features.region", "op": "eval", "value": 1, "reason": "r"}
                    ]
                }
            ),
            "routing.risk_rules.0.op",
        ),
        (model_spec(unexpected=True), "unexpected"),
    ],
)
def test_invalid_specs_are_400_naming_the_field(admin_client, spec, field):
    r = admin_client.post(URL, spec, format="json")
    assert r.status_code == 400, r.content
    assert field in r.json()["error"]["details"], r.json()
    assert not ModelVersion.objects.exists()


def test_a_multiclass_linear_model_needs_a_row_per_label(admin_client):
    spec = model_spec(
        task="multiclass_classification",
        labels=["a", "b", "c"],
        explainer={**LINEAR, "intercept": [0, 0, 0]},
    )
    r = admin_client.post(URL, spec, format="json")
    assert "explainer.coef" in r.json()["error"]["details"]
    spec["explainer"]["coef"] = [[0.1] * 4] * 3
    assert admin_client.post(URL, spec, format="json").status_code == 201


def test_a_linear_model_takes_no_artifact(admin_client):
    spec = {**model_spec(explainer=LINEAR), "artifact": base64.b64encode(b"x").decode()}
    r = admin_client.post(URL, spec, format="json")
    assert r.status_code == 400
    assert "artifact" in r.json()["error"]["details"]


@pytest.mark.parametrize("artifact", ["not base64!", 12])
def test_a_bad_base64_artifact_is_400(admin_client, artifact):
    spec = {**model_spec(explainer={"kind": "lightgbm"}), "artifact": artifact}
    r = admin_client.post(URL, spec, format="json")
    assert r.status_code == 400
    assert "artifact" in r.json()["error"]["details"]


def test_multipart_without_a_json_spec_is_400(admin_client):
    r = admin_client.post(URL, {"spec": "{nope"}, format="multipart")
    assert r.status_code == 400
    assert "spec" in r.json()["error"]["details"]
    r = admin_client.post(URL, {"other": "x"}, format="multipart")
    assert r.status_code == 400


@override_settings(MAX_BODY_BYTES=2048)
def test_an_artifact_over_the_body_limit_is_413(admin_client):
    from django.test import Client

    client = Client(HTTP_AUTHORIZATION=f"Token {admin_client.token}")
    spec = {
        **model_spec(explainer={"kind": "lightgbm"}),
        "artifact": base64.b64encode(b"x" * 4096).decode(),
    }
    r = client.post(URL, json.dumps(spec), content_type="application/json")
    assert r.status_code == 413
    assert not ModelVersion.objects.exists()


def test_list_pages_by_cursor_with_a_bounded_number_of_queries(
    admin_client, django_assert_max_num_queries
):
    for v in range(5):
        admin_client.post(URL, model_spec(version=str(v)), format="json")
    with django_assert_max_num_queries(4):
        page = admin_client.get(f"{URL}?page_size=2").json()
    assert set(page) == {"results", "next"}
    seen = [m["version"] for m in page["results"]]
    while page["next"]:
        page = admin_client.get(page["next"]).json()
        seen += [m["version"] for m in page["results"]]
    assert seen == ["4", "3", "2", "1", "0"]


def test_unknown_models_are_404(admin_client):
    for ref in ("999", "nope:1", "nope", "99999999999999999999999"):
        r = admin_client.get(f"{URL}{ref}/")
        assert r.status_code == 404, ref
        assert r.json()["error"]["code"] == "model_not_found"


def test_a_model_lists_its_active_override_reason_codes(admin_client):
    from apps.registry.models import ReasonCode

    # given reason codes for the model's name, one retired, one for another model
    ReasonCode.objects.create(model_name="credit-default", code="stale_income")
    ReasonCode.objects.create(model_name="credit-default", code="id_mismatch")
    ReasonCode.objects.create(model_name="credit-default", code="old", active=False)
    ReasonCode.objects.create(model_name="other", code="nope")
    # when the model is registered and read
    created = admin_client.post(URL, model_spec(), format="json").json()
    # then it lists the active codes of its name, in both answers
    assert created["reason_codes"] == ["id_mismatch", "stale_income"]
    assert admin_client.get(f"{URL}{created['id']}/").json()["reason_codes"] == [
        "id_mismatch",
        "stale_income",
    ]
