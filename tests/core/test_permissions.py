"""Every endpoint of this issue against every role: 401, 403, 404 and what passes."""

import pytest
from rest_framework.test import APIClient

from tests.factories import ROLES, model_spec, prediction_body

# A pipeline account reads labels and runs exports, nothing else (API.md).
MODEL_READERS = set(ROLES) - {"pipeline"}

ALLOWED = {
    ("GET", "/api/v1/models/"): MODEL_READERS,
    ("POST", "/api/v1/models/"): {"admin"},
    ("GET", "/api/v1/models/{model}/"): MODEL_READERS,
    ("GET", "/api/v1/predictions/"): {"producer", "admin"},
    ("POST", "/api/v1/predictions/"): {"producer"},
    ("GET", "/api/v1/predictions/{prediction}/"): {"producer", "admin"},
}


@pytest.fixture
def world(role_clients):
    admin, producer = role_clients["admin"], role_clients["producer"]
    model = admin.post("/api/v1/models/", model_spec(), format="json").json()
    prediction = producer.post("/api/v1/predictions/", prediction_body(), format="json").json()
    return {"model": model["id"], "prediction": prediction["id"]}


def call(client, method, path, world, n):
    path = path.format(**world)
    if method == "GET":
        return client.get(path)
    body = model_spec(version=f"p{n}") if "models" in path else prediction_body(f"p-{n}")
    return client.post(path, body, format="json")


@pytest.mark.parametrize(("method", "path"), list(ALLOWED))
def test_no_credentials_is_401(world, method, path):
    r = call(APIClient(), method, path, world, 0)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "not_authenticated"
    assert r["WWW-Authenticate"].startswith("Token")


@pytest.mark.parametrize(("method", "path"), list(ALLOWED))
def test_a_bad_token_is_401(world, method, path):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    r = call(client, method, path, world, 0)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "authentication_failed"


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("method", "path"), list(ALLOWED))
def test_each_role_on_each_endpoint(world, role_clients, role, method, path):
    r = call(role_clients[role], method, path, world, ROLES.index(role))
    if role in ALLOWED[(method, path)]:
        assert r.status_code in (200, 201), r.content
    else:
        assert r.status_code == 403, r.content
        assert r.json()["error"]["code"] == "permission_denied"


def test_a_producer_sees_only_its_own_predictions(world, role_clients):
    from tests.factories import make_client

    other = make_client("other-producer", "producer")
    # its own lookup by id and by external id work; another producer's do not
    assert other.get(f"/api/v1/predictions/{world['prediction']}/").status_code == 404
    page = other.get("/api/v1/predictions/?external_id=app-1&model=credit-default:3").json()
    assert page == {"results": [], "next": None}
    mine = (
        role_clients["producer"]
        .get("/api/v1/predictions/?external_id=app-1&model=credit-default:3")
        .json()
    )
    assert [p["id"] for p in mine["results"]] == [world["prediction"]]
    # the admin sees everything
    assert (
        role_clients["admin"].get(f"/api/v1/predictions/{world['prediction']}/").status_code == 200
    )


def test_unknown_prediction_ids_are_404(world, role_clients):
    for pid in ("999999", "99999999999999999999999"):
        r = role_clients["producer"].get(f"/api/v1/predictions/{pid}/")
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "prediction_not_found"
