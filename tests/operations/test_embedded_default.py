"""The embedded default (SQLite, tasks in-process) runs the whole review path, as
``make demo`` does: the rest of the suite runs on PostgreSQL."""

import os

from tests.helpers import manage_py

SCRIPT = """
from rest_framework.test import APIClient
from apps.accounts.services import account_token, account_upsert
reviewer = account_upsert(username="sqlite-reviewer", roles=["reviewer"])
client = APIClient(HTTP_HOST="127.0.0.1")
client.credentials(HTTP_AUTHORIZATION="Token " + account_token(user=reviewer))
item = client.post("/api/v1/queue/claim/").json()
assert item["explanation_status"] == "ready", item
assert item["explanation"]["method"] == "tree_shap", item
again = client.post("/api/v1/queue/claim/").json()
assert again["id"] == item["id"], again
r = client.post(f"/api/v1/reviews/{item['id']}/heartbeat/",
                {"lease_token": item["lease"]["token"]}, format="json")
assert r.status_code == 200, r.content
r = client.post(f"/api/v1/reviews/{item['id']}/decide/",
                {"lease_token": item["lease"]["token"],
                 "label": item["prediction"]["prediction"]["label"]}, format="json")
assert r.status_code == 200, r.content
import json
pipeline = account_upsert(username="sqlite-pipeline", roles=["pipeline"])
client.credentials(HTTP_AUTHORIZATION="Token " + account_token(user=pipeline))
r = client.get("/api/v1/labels/")
assert r.status_code == 200, r.content
labels = [json.loads(line) for line in b"".join(r.streaming_content).splitlines()]
assert [label["prediction_id"] for label in labels] == [item["prediction"]["id"]], labels
assert labels[0]["decided_at"].endswith("Z") and labels[0]["explanation"], labels
nothing_newer = client.get("/api/v1/labels/", {"after": r["X-Next-Cursor"]})
assert b"".join(nothing_newer.streaming_content) == b"", "a label was served twice"
from django.core.management import call_command
call_command("audit_verify")
print("ok")
"""


def test_demo_setup_and_a_review_on_sqlite(tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "reviewqueue.settings.local",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}",
    }
    env.pop("CELERY_BROKER_URL", None)

    for args in (("migrate", "--noinput"), ("demo_setup",), ("shell", "-c", SCRIPT)):
        done = manage_py(env, *args)
        assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-3000:])
    assert done.stdout.strip().endswith("ok")
