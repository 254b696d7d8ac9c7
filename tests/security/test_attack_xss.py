"""Stored XSS at the API: script payloads in every stored text a client can write.

The browser side (the review screens escape what they show) is tests/ui. Here: every
API answer is ``application/json`` with ``X-Content-Type-Options: nosniff`` (a browser
never sniffs it into HTML), no API endpoint can be talked into HTML (``?format=api``,
``Accept: text/html``), and no HTML page (schema docs, error pages, the review
screens, the admin's lists) carries a payload unescaped.
"""

from urllib.parse import quote

import pytest
from django.test import Client

from apps.registry.models import ReasonCode

pytestmark = pytest.mark.django_db

SCRIPT = "<script>alert(1)</script>"
ATTRIBUTE = '"><img src=x onerror=alert(2)>'
PAYLOADS = (SCRIPT, ATTRIBUTE, "<svg/onload=alert(3)>", "javascript:alert(4)//<b>")
PASSWORD = "xss-pass-123"


def xss_spec() -> dict:
    return {
        "name": "xss-model",
        "version": "1",
        "task": "binary_classification",
        "labels": [SCRIPT, ATTRIBUTE],
        "features": [
            {"name": f"income{SCRIPT}", "type": "numeric"},
            {"name": "region", "type": "categorical", "categories": [ATTRIBUTE, "<i>s</i>"]},
        ],
        "explainer": {"kind": "precomputed", "output": "probability"},
        # routes everything, due in a minute: the next claim takes it
        "routing": {"min_confidence": 1.0, "sla": {"default": "PT1M"}, "queue": "default"},
    }


def xss_prediction() -> dict:
    return {
        "model": "xss-model:1",
        "external_id": f"ext-{SCRIPT}",
        "features": {f"income{SCRIPT}": 1.0, "region": ATTRIBUTE},
        "prediction": {"label": SCRIPT, "probabilities": {SCRIPT: 0.6, ATTRIBUTE: 0.4}},
        "context": {SCRIPT: ATTRIBUTE, "note": PAYLOADS[2], "nested": {ATTRIBUTE: [PAYLOADS[3]]}},
        "attributions": {
            "base_value": 0.5,
            "values": {f"income{SCRIPT}": 0.05, "region": 0.05},
        },
    }


@pytest.fixture
def stored(world, django_capture_on_commit_callbacks):
    """Payloads stored through the API in every text a client writes; what to read."""
    m = world.members
    admin, producer, reviewer, manager = (
        m["admin"],
        m["producer"],
        m["reviewer"],
        m["escalation_manager"],
    )
    r = admin.post("/api/v1/models/", xss_spec(), format="json")
    assert r.status_code == 201, r.content
    model_id = r.json()["id"]
    ReasonCode.objects.create(model_name="credit-default", code="xss_code", description=SCRIPT)
    with django_capture_on_commit_callbacks(execute=True):  # explains it
        r = producer.post("/api/v1/predictions/", xss_prediction(), format="json")
    assert r.status_code == 201, r.content
    prediction_id = r.json()["id"]
    with django_capture_on_commit_callbacks(execute=True):
        # the held item is decided with a payload comment (an override with a code)
        r = reviewer.post(
            f"/api/v1/reviews/{world.own['item']}/decide/",
            {
                "lease_token": world.own["lease_token"],
                "label": "deny",
                "reason_code": "xss_code",
                "comment": SCRIPT,
            },
            format="json",
        )
        assert r.status_code == 200, r.content
        # the next claim is the payload prediction's item; it is escalated with one
        item = reviewer.post("/api/v1/queue/claim/").json()
        assert item["prediction"]["id"] == prediction_id, item
        r = reviewer.post(
            f"/api/v1/reviews/{item['id']}/escalate/",
            {"lease_token": item["lease"]["token"], "reason": "needs_expert", "comment": ATTRIBUTE},
            format="json",
        )
        assert r.status_code == 200, r.content
        r = manager.post(
            f"/api/v1/escalations/{world.own['claimed_escalation']}/resolve/",
            {
                "label": "approve",
                "comment": PAYLOADS[2],
                "lease_token": world.own["escalation_lease_token"],
            },
            format="json",
        )
        assert r.status_code == 200, r.content
    escalations = manager.get("/api/v1/escalations/").json()["results"]
    escalation = next(e for e in escalations if e["item"] == item["id"])
    return {
        "model": model_id,
        "prediction": prediction_id,
        "item": item["id"],
        "escalation": escalation["id"],
    }


def api_reads(world, stored) -> list[tuple[str, str]]:
    """(role, path) of every API read that returns stored text."""
    return [
        ("admin", "/api/v1/models/"),
        ("admin", f"/api/v1/models/{stored['model']}/"),
        ("admin", "/api/v1/models/xss-model:1/"),
        ("producer", "/api/v1/predictions/"),
        ("producer", f"/api/v1/predictions/{stored['prediction']}/"),
        ("producer", f"/api/v1/predictions/?external_id={quote('ext-' + SCRIPT)}"),
        ("escalation_manager", "/api/v1/escalations/"),
        ("pipeline", "/api/v1/exports/"),
        ("pipeline", "/api/v1/labels/"),
        ("pipeline", "/api/v1/labels/?format=csv"),
        # error answers that quote what they were given
        ("admin", f"/api/v1/models/{quote(SCRIPT, safe='')}/"),
        ("producer", f"/api/v1/predictions/?model={quote(SCRIPT)}"),
        ("pipeline", f"/api/v1/labels/?model={quote(SCRIPT)}"),
        ("pipeline", f"/api/v1/labels/?after={quote(ATTRIBUTE)}"),
        ("escalation_manager", f"/api/v1/escalations/?status={quote(SCRIPT)}"),
    ]


def assert_no_raw_payload(response, where) -> None:
    content = b"".join(response.streaming_content) if response.streaming else response.content
    text = content.decode(errors="replace")
    for payload in PAYLOADS:
        assert payload not in text, (where, payload)


def test_api_answers_are_json_that_browsers_do_not_sniff(world, stored):
    seen = 0
    for role, path in api_reads(world, stored):
        r = world.members[role].get(path)
        assert r.status_code < 500, (path, r.status_code)
        assert r["X-Content-Type-Options"] == "nosniff", path
        kind = r["Content-Type"]
        if kind.startswith("application/json"):
            seen += SCRIPT in r.content.decode()
        else:
            # the label feed's own formats: JSONL, CSV, Parquet; never HTML
            assert kind.split(";")[0] in ("application/x-ndjson", "text/csv"), (path, kind)
            assert r.get("Content-Disposition", "").startswith("attachment") or "ndjson" in kind
    # and the payloads really were stored and served back (as JSON)
    assert seen >= 5


@pytest.mark.parametrize(
    "how",
    [
        {"query": "format=api"},
        {"query": "format=html"},
        {"query": "format=json", "HTTP_ACCEPT": "text/html"},
        {"HTTP_ACCEPT": "text/html"},
        {"HTTP_ACCEPT": "text/html,application/xhtml+xml,*/*;q=0.8"},
        {"HTTP_ACCEPT": "application/xml"},
    ],
)
def test_no_api_endpoint_can_be_talked_into_html(world, stored, how):
    how = dict(how)
    query = how.pop("query", "")
    for role, path in api_reads(world, stored):
        sep = "&" if "?" in path else "?"
        r = world.members[role].get(f"{path}{sep}{query}" if query else path, **how)
        assert r.status_code < 500, (path, how, r.status_code)
        assert not r["Content-Type"].startswith("text/html"), (path, how, r["Content-Type"])
        assert r["X-Content-Type-Options"] == "nosniff", path
        if r["Content-Type"].startswith("application/json"):
            continue
        assert_no_raw_payload(r, (path, how))


def logged_in(user) -> Client:
    user.set_password(PASSWORD)
    user.save(update_fields=["password"])
    browser = Client()
    assert browser.login(username=user.username, password=PASSWORD)
    return browser


def test_html_pages_never_carry_a_payload_unescaped(world, stored):
    admin = logged_in(world.members["admin"].user)
    manager = logged_in(world.members["escalation_manager"].user)
    pages = [
        (admin, "/api/docs/"),
        (admin, "/api/schema/"),
        (admin, f"/no-such-page/{quote(SCRIPT, safe='')}"),
        (admin, f"/api/v1/no-such/{quote(SCRIPT, safe='')}/"),
        (admin, f"/admin/?q={quote(SCRIPT)}"),
        (admin, "/admin/predictions/prediction/"),
        (admin, f"/admin/predictions/prediction/?q={quote(SCRIPT)}"),
        (admin, f"/admin/predictions/prediction/{stored['prediction']}/change/"),
        (admin, "/admin/registry/modelversion/"),
        (admin, f"/admin/registry/modelversion/{stored['model']}/change/"),
        (admin, "/admin/registry/reasoncode/"),
        (admin, "/admin/reviews/reviewitem/"),
        (admin, f"/admin/reviews/reviewitem/{stored['item']}/change/"),
        (admin, "/overview/"),
        (manager, "/escalations/"),
        (manager, f"/escalations/{stored['escalation']}/"),
        (manager, "/queues/"),
        (manager, f"/login/?next={quote(SCRIPT)}"),
    ]
    for browser, path in pages:
        r = browser.get(path)
        assert r.status_code < 500, (path, r.status_code)
        assert r["X-Content-Type-Options"] == "nosniff", path
        assert_no_raw_payload(r, path)


def test_the_review_screen_shows_the_payload_case_escaped(world, stored):
    # given a reviewer holding the payload prediction's item (returned from escalation)
    manager = world.members["escalation_manager"]
    r = manager.post(
        f"/api/v1/escalations/{stored['escalation']}/return/", {"comment": SCRIPT}, format="json"
    )
    assert r.status_code == 200, r.content
    reviewer = world.members["reviewer"]
    item = reviewer.post("/api/v1/queue/claim/").json()
    assert item["id"] == stored["item"]
    # when the review screen renders it
    r = logged_in(reviewer.user).get("/review/")
    # then every payload is there, escaped, and none raw
    assert r.status_code == 200
    assert_no_raw_payload(r, "/review/")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.content.decode()
