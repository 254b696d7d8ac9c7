from tests.conftest import prediction_body


def test_single_prediction_round_trip(producer_client, registered_model):
    r = producer_client.post("/api/v1/predictions/", prediction_body(), format="json")
    assert r.status_code == 201, r.content
    assert r.json()["status"] == "auto_accepted"
