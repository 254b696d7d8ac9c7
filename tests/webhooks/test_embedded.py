"""Webhooks on the embedded default (SQLite, tasks in-process), as ``make demo`` runs."""

import os

from tests.helpers import manage_py, verify

SCRIPT = """
from rest_framework.test import APIClient
from apps.accounts.services import account_token, account_upsert
from apps.webhooks.models import WebhookDelivery
from apps.webhooks.services.subscriptions import webhook_subscription_create
from tests.factories import model_spec, prediction_body

def client(name, role):
    c = APIClient(HTTP_HOST="127.0.0.1")
    user = account_upsert(username=name, roles=[role])
    c.credentials(HTTP_AUTHORIZATION="Token " + account_token(user=user))
    return c

_, secret = webhook_subscription_create(name="r", url=URL, events=["prediction.decided"])
assert client("a", "admin").post("/api/v1/models/", model_spec(), format="json").status_code == 201
r = client("p", "producer").post(
    "/api/v1/predictions/", prediction_body(context={"amount": 20000}), format="json")
assert r.status_code == 201, r.content
reviewer = client("r", "reviewer")
item = reviewer.post("/api/v1/queue/claim/").json()
r = reviewer.post(f"/api/v1/reviews/{item['id']}/decide/",
                  {"lease_token": item["lease"]["token"], "label": "approve"}, format="json")
assert r.status_code == 200, r.content
delivery = WebhookDelivery.objects.get()
assert delivery.status == "delivered", (delivery.status, delivery.last_error)
print("secret", secret)
"""


def test_a_decision_is_delivered_on_sqlite(tmp_path, receiver):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "reviewqueue.settings.local",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'hooks.sqlite3'}",
        "WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "1",
    }
    env.pop("CELERY_BROKER_URL", None)
    script = f"URL = {receiver.url!r}\n" + SCRIPT
    for args in (("migrate", "--noinput"), ("shell", "-c", script)):
        done = manage_py(env, *args)
        assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-3000:])
    secret = done.stdout.strip().splitlines()[-1].split()[-1]
    [request] = receiver.requests
    assert verify(secret, request)
