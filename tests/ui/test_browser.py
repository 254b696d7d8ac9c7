"""The review screens in a real browser: Playwright driving the system's headless
Chromium (Debian's ``chromium``; ``make test`` installs it) against a live server on
the test database. Keyboard only where a reviewer would use the keyboard.

The screenshots in ``docs/img`` are made here.
"""

import math
import os
import re
import shutil
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.signals import request_finished, request_started
from django.utils import timezone
from playwright import sync_api

from apps.reviews.models import Decision, Escalation, ItemStatus, ReviewItem
from apps.reviews.services.leases import review_items_expire_leases
from tests.factories import PASSWORD, login_client, model_spec, prediction_body
from tests.helpers import XSS


@pytest.fixture(autouse=True, scope="module")
def allow_orm_calls_beside_playwright():
    """Playwright's sync API runs an event loop in this thread; the ORM calls the tests
    make between browser steps are still plain synchronous calls. Set for this module
    only: the variable must not leak into other tests' subprocesses."""
    saved = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if saved is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE")
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = saved


DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
pytestmark = pytest.mark.django_db(transaction=True)


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium")
    assert path, "Debian's chromium is needed: make test installs it (apt-get install chromium)"
    return path


@pytest.fixture(scope="module")
def chromium():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"]
        )
        yield browser
        browser.close()


class RequestsInFlight:
    """Counts the requests the live server is handling (Django's request signals)."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()
        request_started.connect(self.started)
        request_finished.connect(self.finished)

    def started(self, **kwargs) -> None:
        with self.lock:
            self.count += 1

    def finished(self, **kwargs) -> None:
        with self.lock:
            self.count -= 1

    def wait_quiet(self, *, quiet: float = 0.5, timeout: float = 15.0) -> None:
        """Until no request has been in flight for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            if self.count:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= quiet:
                return
            time.sleep(0.05)

    def disconnect(self) -> None:
        request_started.disconnect(self.started)
        request_finished.disconnect(self.finished)


@pytest.fixture
def new_page(chromium, live_server, transactional_db):
    """Pages in fresh browser contexts, closed before the database is emptied.

    Closing a review page makes the browser send the lease release (a beacon) that the
    live server may still be handling when ``close()`` returns: the database is only
    emptied once the server has been idle for a moment, or that request and the
    emptying's TRUNCATE deadlock."""
    contexts = []
    in_flight = RequestsInFlight()

    def make():
        context = chromium.new_context(viewport={"width": 1360, "height": 1000})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.base = live_server.url
        page.errors = []
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        return page

    yield make
    for context in contexts:
        context.close()
    in_flight.wait_quiet()
    in_flight.disconnect()


def log_in(page, username: str) -> None:
    """Type the credentials and press Enter (the user name field has the focus)."""
    page.goto(f"{page.base}/login/")
    page.keyboard.type(username)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    with page.expect_navigation():
        page.keyboard.press("Enter")


def press(page, key: str) -> None:
    """Press a key that submits a form, and wait for the next page."""
    with page.expect_navigation():
        page.keyboard.press(key)


def wait_until(condition, timeout: float = 10.0) -> None:
    """Poll ``condition`` (the page works in the browser meanwhile) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def case_on_screen(page) -> str:
    return page.inner_text("#external-id")


def sentinel(page):
    return page.evaluate("window.__xss")


def test_five_cases_by_keyboard_then_a_manager_resolves_the_escalation(
    new_page, routed_items, reason_codes, producer_client
):
    # given five cases waiting in queue default, a reviewer and a manager
    ids = routed_items(5, prefix="case")
    login_client("rita", "reviewer", queues=["default"])
    login_client("max", "escalation_manager", queues=["default"])
    page = new_page()

    # when the reviewer logs in and starts reviewing with Enter
    log_in(page, "rita")
    assert page.url.endswith("/queues/")
    press(page, "Enter")
    assert page.url.endswith("/review/")
    page.wait_for_selector("svg.waterfall")

    seen = {}
    # case 1: accept
    seen[case_on_screen(page)] = "accept"
    press(page, "a")
    # case 2: override with the label key, a reason and a comment
    seen[case_on_screen(page)] = "override"
    page.keyboard.press("2")
    assert page.is_visible("#override-panel")
    page.keyboard.press("Space")  # the first reason code
    page.keyboard.press("Tab")
    page.keyboard.type("income was misread")
    press(page, "Enter")
    # case 3: escalate with a comment
    seen[case_on_screen(page)] = "escalate"
    page.keyboard.press("e")
    assert page.is_visible("#escalate-panel")
    page.keyboard.press("Tab")
    page.keyboard.type("needs a second look")
    press(page, "Enter")
    # case 4: accept; case 5: the model's label key accepts too
    seen[case_on_screen(page)] = "accept"
    press(page, "a")
    seen[case_on_screen(page)] = "accept"
    press(page, "1")

    # then the queue is empty and every case was handled once
    assert page.url.endswith("/queues/")
    assert "Nothing is ready" in page.inner_text(".messages")
    assert len(seen) == 5
    assert page.errors == []
    by_external = {
        item.prediction.external_id: item
        for item in ReviewItem.objects.select_related("prediction").filter(id__in=ids)
    }
    escalated = next(k for k, v in seen.items() if v == "escalate")
    assert by_external[escalated].status == ItemStatus.ESCALATED
    overridden = next(k for k, v in seen.items() if v == "override")
    decision = Decision.objects.get(item=by_external[overridden])
    assert (decision.label, decision.reason_code, decision.comment) == (
        "deny",
        "income_misread",
        "income was misread",
    )

    # when the manager opens the escalation, claims it (C), picks deny (2) and resolves
    manager = new_page()
    log_in(manager, "max")
    manager.goto(f"{manager.base}/escalations/")
    assert "needs_expert" in manager.inner_text("#escalation-table")
    with manager.expect_navigation():
        manager.click(f"text={escalated}")
    assert "needs a second look" in manager.inner_text("#escalation-comment")
    assert "escalated" in manager.inner_text(".history")
    press(manager, "c")
    manager.keyboard.press("2")
    manager.keyboard.press("Tab")
    manager.keyboard.type("confirmed")
    press(manager, "Enter")
    assert "resolved" in manager.inner_text(".messages")
    assert Escalation.objects.get(item=by_external[escalated]).status == "resolved"

    # then every decision shows through the API
    finals = {}
    for external_id, item in by_external.items():
        body = producer_client.get(f"/api/v1/predictions/{item.prediction_id}/").json()
        assert body["status"] == "decided", body
        final = (body["final"]["label"], body["final"]["source"])
        finals.setdefault(seen[external_id], []).append(final)
    assert finals == {
        "accept": [("approve", "reviewer")] * 3,
        "override": [("deny", "reviewer")],
        "escalate": [("deny", "escalation")],
    }

    # and the overview shows them (its screenshot goes to the docs)
    manager.goto(f"{manager.base}/overview/")
    assert "5 in the last 24 hours" in manager.inner_text("main")
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    manager.screenshot(path=str(DOCS_IMG / "overview.png"), full_page=True)
    assert manager.errors == []


def test_a_lease_left_open_expires_and_the_case_goes_to_another_reviewer(
    new_page, routed_items, settings
):
    # given a short lease (the page renews it every 3 s) and one case
    settings.REVIEW_LEASE_SECONDS = 9
    (item_id,) = routed_items(1, prefix="lonely")
    login_client("ann", "reviewer")
    login_client("ben", "reviewer")
    first = new_page()
    log_in(first, "ann")
    press(first, "Enter")
    assert case_on_screen(first) == "lonely-0"
    # the open page keeps the lease alive through heartbeats
    expires = ReviewItem.objects.get(id=item_id).lease_expires_at
    wait_until(lambda: ReviewItem.objects.get(id=item_id).lease_expires_at > expires)

    # when the lease expires (the expiry service, its clock past the lease)
    later = timezone.now() + timedelta(seconds=settings.REVIEW_LEASE_SECONDS + 1)
    assert review_items_expire_leases(now=later) == 1
    assert ReviewItem.objects.get(id=item_id).status == ItemStatus.READY

    # then another reviewer gets the case
    second = new_page()
    log_in(second, "ben")
    press(second, "Enter")
    assert case_on_screen(second) == "lonely-0"
    assert ReviewItem.objects.get(id=item_id).leased_by.username == "ben"
    # and the first page learns at its next heartbeat that the lease is gone
    first.wait_for_selector("#lease[data-lost]", timeout=10_000)
    assert first.is_disabled("#accept")
    assert ReviewItem.objects.get(id=item_id).leased_by.username == "ben"


def test_leaving_the_page_gives_the_case_back(new_page, routed_items):
    (item_id,) = routed_items(1, prefix="left")
    login_client("cy", "reviewer")
    page = new_page()
    log_in(page, "cy")
    press(page, "Enter")
    assert ReviewItem.objects.get(id=item_id).status == ItemStatus.LEASED
    # when the reviewer follows a link away from the case
    page.goto(f"{page.base}/")
    # then the page's beacon released it
    wait_until(lambda: ReviewItem.objects.get(id=item_id).status == ItemStatus.READY)


XSS_MODEL = "xss-model"


def register_xss_model(admin_client):
    """A model whose feature names, categories and labels are payloads (the spec
    validator accepts any non-empty text there)."""
    features = [{"name": payload, "type": "numeric"} for payload in XSS[:4]]
    features.append({"name": "kind", "type": "categorical", "categories": XSS})
    spec = model_spec(
        name=XSS_MODEL,
        version="1",
        labels=["fine", XSS[1]],
        features=features,
        routing={"min_confidence": 0.99, "queue": "xss", "audit_rate": 0.0},
    )
    r = admin_client.post("/api/v1/models/", spec, format="json")
    assert r.status_code == 201, r.content
    return spec


def test_xss_payloads_render_as_text(new_page, admin_client, producer_client):
    # given a case whose feature names, categorical value, external id, context keys
    # and values, label and escalation comment are all payloads
    spec = register_xss_model(admin_client)
    names = [f["name"] for f in spec["features"]]
    body = prediction_body(
        XSS[0],
        model=f"{XSS_MODEL}:1",
        features={**{n: float(i) for i, n in enumerate(names[:4])}, "kind": XSS[2]},
        prediction={"label": "fine", "probabilities": {"fine": 0.6, XSS[1]: 0.4}},
        context={"html": XSS[5], XSS[3]: XSS[4], "nested": {"html": XSS[0]}},
        attributions={
            "base_value": 0.5,
            "values": {**{n: 0.02 for n in names[:4]}, "kind": 0.02},
        },
    )
    r = producer_client.post("/api/v1/predictions/", body, format="json")
    assert r.status_code == 201, r.content
    login_client("xavier", "escalation_manager")
    page = new_page()
    log_in(page, "xavier")
    press(page, "Enter")

    # then the review screen shows every payload as text, and none ran
    text = page.inner_text("main")
    assert case_on_screen(page) == XSS[0]
    for payload in (XSS[0], XSS[2], XSS[3], XSS[4], XSS[5]):
        assert payload in text
    features = page.inner_text(".features")
    assert all(name in features for name in names[:4])
    assert page.locator("main script, main img, main iframe").count() == 0
    assert page.locator("a[href^='javascript']").count() == 0
    assert page.locator("svg svg").count() == 0
    assert sentinel(page) is None

    # when the reviewer escalates with a payload as the comment
    page.keyboard.press("e")
    page.keyboard.press("Tab")
    page.keyboard.type(XSS[1])
    press(page, "Enter")
    assert sentinel(page) is None

    # then the escalation list and page show it as text too
    page.goto(f"{page.base}/escalations/")
    assert XSS[0] in page.inner_text("#escalation-table")
    assert sentinel(page) is None
    with page.expect_navigation():
        page.click("#escalation-table a")
    assert page.inner_text("#escalation-comment") == XSS[1]
    assert XSS[1] in page.inner_text(".probs")  # a label
    assert "reason: needs_expert" in page.inner_text(".history")
    assert page.locator("main script, main img").count() == 0
    assert sentinel(page) is None
    assert page.errors == []


def test_the_waterfall_of_a_wide_model_and_the_review_screen_screenshot(
    new_page, admin_client, producer_client
):
    # given a 16-feature model (one sensitive) explained in log-odds, and one case
    names = [
        "income", "debt_ratio", "age", "months_employed", "open_accounts", "late_payments",
        "credit_utilisation", "loan_amount", "term_months", "region", "home_owner",
        "inquiries_6m", "savings", "dependants", "channel_score", "account_age_years",
    ]  # fmt: skip
    features = [{"name": n, "type": "numeric", "sensitive": n == "age"} for n in names]
    features[9] = {"name": "region", "type": "categorical", "categories": ["north", "south"]}
    spec = model_spec(
        name="credit-risk",
        version="7",
        labels=["approve", "deny"],
        features=features,
        explainer={"kind": "precomputed", "output": "log_odds"},
        routing={"min_confidence": 0.9, "queue": "loans", "audit_rate": 0.0},
    )
    assert admin_client.post("/api/v1/models/", spec, format="json").status_code == 201
    values = [0.62, -0.41, 0.35, -0.22, 0.18, 0.55, 0.31, -0.12, 0.07, -0.05, 0.04, 0.03]
    values += [-0.02, 0.015, -0.01]
    output = math.log(0.82 / 0.18)
    base = -0.6
    values.append(output - base - sum(values))
    row = {n: float(i * 3 + 1) for i, n in enumerate(names)}
    row.update({"income": 38500.0, "region": "south", "debt_ratio": 0.47, "age": 29.0})
    body = prediction_body(
        "loan-2026-11-0481",
        model="credit-risk:7",
        features=row,
        prediction={"label": "deny", "probabilities": {"approve": 0.18, "deny": 0.82}},
        context={"amount": 24000, "channel": "branch", "product": "personal loan"},
        attributions={"base_value": base, "values": dict(zip(names, values, strict=True))},
    )
    r = producer_client.post("/api/v1/predictions/", body, format="json")
    assert r.status_code == 201, r.content
    login_client("dana", "reviewer")
    page = new_page()
    log_in(page, "dana")
    press(page, "Enter")

    # then the waterfall has base, the ten largest rows, "6 other features" (15 public
    # features and the folded sensitive row make 16 rows) and the output,
    # with the sensitive feature only as the folded row, on a log-odds axis
    chart = page.locator("svg.waterfall")
    assert chart.locator("g.row").count() == 13
    text = chart.text_content()
    assert "6 other features" in text
    assert "sensitive features" in text and not re.search(r"\bage = ", text)
    assert "log-odds of “deny”" in text
    assert "income = 38500" in text
    assert "age" not in page.locator(".features th").all_inner_texts()
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1360, "height": 1200})
    page.screenshot(path=str(DOCS_IMG / "review-screen.png"))
