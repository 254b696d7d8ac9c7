"""The review screens server-side, through Django's test client: every action goes
through the review services, refusals change nothing, and pages are safe."""

import re

import pytest
import time_machine
from django.test import Client
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.reviews.models import Decision, Escalation, ItemStatus, ReviewItem
from tests.factories import login_client
from tests.helpers import review_state

pytestmark = pytest.mark.django_db


def token_of(html: str) -> str:
    return re.search(r'name="lease_token" value="([0-9a-f-]{36})"', html).group(1)


@pytest.fixture
def reviewer():
    return login_client("rev-ui", "reviewer")


def test_anonymous_users_are_sent_to_log_in():
    for path in ("/queues/", "/review/", "/escalations/", "/overview/"):
        r = Client().get(path)
        assert r.status_code == 302
        assert r["Location"].startswith("/login/?next=")


def test_login_lands_on_the_queues_with_ready_counts(routed_items):
    # given two ready items in queue default and a reviewer of that queue
    routed_items(2)
    login_client("rev-q", "reviewer", queues=["default"])
    browser = Client()
    # when the reviewer logs in through the form
    r = browser.post(
        "/login/", {"username": "rev-q", "password": "correct-horse-battery"}, follow=True
    )
    # then the queues page shows the queue with its ready count and a start button
    assert r.redirect_chain[-1][0] == "/queues/"
    html = r.content.decode()
    assert "Start reviewing" in html
    assert re.search(r"<th scope=\"row\">default</th>\s*<td class=\"num\">2</td>", html)


def test_a_wrong_password_is_refused(db):
    login_client("rev-x", "reviewer")
    r = Client().post("/login/", {"username": "rev-x", "password": "nope"})
    assert r.status_code == 200
    assert "_auth_user_id" not in Client().session


def test_roles_are_checked(routed_items):
    producer = login_client("prod-ui", "producer")
    reviewer = login_client("rev-r", "reviewer")
    assert producer.get("/queues/").status_code == 403
    assert producer.post("/queues/start/").status_code == 403
    assert reviewer.get("/escalations/").status_code == 403
    assert reviewer.get("/overview/").status_code == 403
    # an admin without the reviewer role is sent to the overview
    admin = login_client("adm-ui", "admin")
    assert admin.get("/queues/")["Location"] == "/overview/"
    assert admin.get("/overview/").status_code == 200


def test_start_claims_through_the_lease_service_and_shows_the_case(reviewer, routed_items):
    # given a ready item
    (item_id,) = routed_items(1)
    # when the reviewer starts reviewing
    r = reviewer.post("/queues/start/", follow=True)
    # then the item is leased to them, and the screen shows it without the sensitive feature
    item = ReviewItem.objects.get(id=item_id)
    assert item.status == ItemStatus.LEASED
    assert item.leased_by.username == "rev-ui"
    html = r.content.decode()
    assert r.redirect_chain[-1][0] == "/review/"
    assert "item-0" in html
    assert "credit-default:3" in html
    assert "high_amount" in html
    assert ">income<" in html and ">52000<" in html
    assert ">age<" not in html and ">41<" not in html
    assert "sensitive features" in html  # the folded SHAP row
    assert '<svg class="waterfall"' in html
    assert "model output: probability of" in html
    assert token_of(html) == str(item.lease_token)
    assert AuditEvent.objects.filter(action="claimed", item_id=item_id).count() == 1


def test_accept_decides_and_opens_the_next_case(reviewer, routed_items):
    first, second = routed_items(2)
    html = reviewer.post("/queues/start/", follow=True).content.decode()
    # when the reviewer accepts the model's label
    r = reviewer.post(
        f"/review/{first}/decide/",
        {"lease_token": token_of(html), "label": "approve"},
        follow=True,
    )
    # then the decision is the service's, and the next case is open at once
    decision = Decision.objects.get(item_id=first)
    assert (decision.label, decision.overridden, decision.source) == ("approve", False, "reviewer")
    assert r.redirect_chain[-1][0] == "/review/"
    assert ReviewItem.objects.get(id=second).status == ItemStatus.LEASED
    assert "item-1" in r.content.decode()


def test_override_without_reason_is_refused_and_changes_nothing(
    reviewer, routed_items, reason_codes
):
    (item_id,) = routed_items(1)
    html = reviewer.post("/queues/start/", follow=True).content.decode()
    before = review_state()
    r = reviewer.post(
        f"/review/{item_id}/decide/", {"lease_token": token_of(html), "label": "deny"}
    )
    assert r.status_code == 400
    assert "An override needs a reason code." in r.content.decode()
    assert review_state() == before
    r = reviewer.post(
        f"/review/{item_id}/decide/",
        {"lease_token": token_of(html), "label": "deny", "reason_code": "income_misread"},
    )
    assert r.status_code == 302
    decision = Decision.objects.get(item_id=item_id)
    assert (decision.label, decision.overridden, decision.reason_code) == (
        "deny",
        True,
        "income_misread",
    )


def test_a_stale_token_is_409_and_changes_nothing(reviewer, routed_items):
    (item_id,) = routed_items(1)
    reviewer.post("/queues/start/")
    before = review_state()
    r = reviewer.post(
        f"/review/{item_id}/decide/",
        {"lease_token": "00000000-0000-0000-0000-000000000000", "label": "approve"},
    )
    assert r.status_code == 409
    assert review_state() == before


def test_another_reviewers_item_is_not_theirs(routed_items):
    (item_id,) = routed_items(1)
    alice = login_client("alice", "reviewer")
    bob = login_client("bob", "reviewer")
    html = alice.post("/queues/start/", follow=True).content.decode()
    before = review_state()
    r = bob.post(f"/review/{item_id}/decide/", {"lease_token": token_of(html), "label": "approve"})
    assert r.status_code == 409
    r = bob.post(f"/review/{item_id}/release/", {"lease_token": token_of(html)})
    assert r.status_code == 409
    assert review_state() == before


def test_items_of_other_queues_are_404(routed_items):
    (item_id,) = routed_items(1)
    owner = login_client("owner", "reviewer")
    html = owner.post("/queues/start/", follow=True).content.decode()
    outsider = login_client("outsider", "reviewer", queues=["other"])
    r = outsider.post(f"/review/{item_id}/heartbeat/", {"lease_token": token_of(html)})
    assert r.status_code == 404


def test_heartbeat_extends_the_lease_and_reports_a_lost_one(reviewer, routed_items, settings):
    (item_id,) = routed_items(1)
    html = reviewer.post("/queues/start/", follow=True).content.decode()
    token = token_of(html)
    before = ReviewItem.objects.get(id=item_id).lease_expires_at
    r = reviewer.post(
        f"/review/{item_id}/heartbeat/", {"lease_token": token}, HTTP_HX_REQUEST="true"
    )
    assert r.status_code == 200
    assert ReviewItem.objects.get(id=item_id).lease_expires_at > before
    assert 'id="lease"' in r.content.decode()
    # after a release the same token is lost: 409 with the notice
    reviewer.post(f"/review/{item_id}/release/", {"lease_token": token})
    r = reviewer.post(f"/review/{item_id}/heartbeat/", {"lease_token": token})
    assert r.status_code == 409
    assert "data-lost" in r.content.decode()


def test_skip_releases_the_item(reviewer, routed_items):
    (item_id,) = routed_items(1)
    html = reviewer.post("/queues/start/", follow=True).content.decode()
    r = reviewer.post(f"/review/{item_id}/release/", {"lease_token": token_of(html)})
    assert r.status_code == 302
    item = ReviewItem.objects.get(id=item_id)
    assert item.status == ItemStatus.READY and item.leased_by is None


def test_escalate_then_a_manager_resolves(reviewer, routed_items):
    (item_id,) = routed_items(1)
    html = reviewer.post("/queues/start/", follow=True).content.decode()
    r = reviewer.post(
        f"/review/{item_id}/escalate/",
        {"lease_token": token_of(html), "reason": "needs_expert", "comment": "unsure"},
    )
    assert r.status_code == 302
    escalation = Escalation.objects.get(item_id=item_id)
    manager = login_client("mgr", "escalation_manager")
    listing = manager.get("/escalations/").content.decode()
    assert "needs_expert" in listing and "item-0" in listing
    page = manager.get(f"/escalations/{escalation.id}/").content.decode()
    assert "escalated" in page and "claimed" in page  # the audit history
    assert manager.post(f"/escalations/{escalation.id}/claim/").status_code == 302
    page = manager.get(f"/escalations/{escalation.id}/").content.decode()
    token = token_of(page)
    r = manager.post(
        f"/escalations/{escalation.id}/resolve/",
        {"label": "deny", "comment": "checked", "lease_token": token},
    )
    assert r.status_code == 302
    decision = Decision.objects.get(item_id=item_id)
    assert (decision.label, decision.source) == ("deny", "escalation")


def test_a_manager_returns_an_escalation(routed_items):
    (item_id,) = routed_items(1)
    manager = login_client("mgr2", "escalation_manager")
    html = manager.post("/queues/start/", follow=True).content.decode()
    manager.post(f"/review/{item_id}/escalate/", {"lease_token": token_of(html), "reason": "x"})
    escalation = Escalation.objects.get(item_id=item_id)
    manager.post(f"/escalations/{escalation.id}/claim/")
    token = token_of(manager.get(f"/escalations/{escalation.id}/").content.decode())
    r = manager.post(
        f"/escalations/{escalation.id}/return/", {"comment": "look again", "lease_token": token}
    )
    assert r.status_code == 302
    assert ReviewItem.objects.get(id=item_id).status == ItemStatus.READY


def test_bad_escalation_reason_is_400_and_changes_nothing(reviewer, routed_items):
    (item_id,) = routed_items(1)
    html = reviewer.post("/queues/start/", follow=True).content.decode()
    before = review_state()
    r = reviewer.post(
        f"/review/{item_id}/escalate/", {"lease_token": token_of(html), "reason": "Not Snake"}
    )
    assert r.status_code == 400
    assert review_state() == before


def test_forms_need_the_csrf_token(routed_items):
    (item_id,) = routed_items(1)
    login_client("rev-csrf", "reviewer")
    browser = Client(enforce_csrf_checks=True)
    browser.login(username="rev-csrf", password="correct-horse-battery")
    assert browser.post("/queues/start/").status_code == 403
    assert ReviewItem.objects.get(id=item_id).status == ItemStatus.READY
    page = browser.get("/queues/").content.decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert browser.post("/queues/start/", {"csrfmiddlewaretoken": csrf}).status_code == 302
    assert ReviewItem.objects.get(id=item_id).status == ItemStatus.LEASED


def test_pages_carry_a_strict_csp_and_nosniff(reviewer, routed_items):
    routed_items(1)
    reviewer.post("/queues/start/")
    for path in ("/queues/", "/review/", "/login/", "/"):
        r = reviewer.get(path) if path != "/login/" else Client().get(path)
        csp = r["Content-Security-Policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert r["X-Content-Type-Options"] == "nosniff"
        html = r.content.decode()
        # no inline script: every <script> has a src
        assert all("src=" in tag for tag in re.findall(r"<script[^>]*>", html))
        assert " on" not in "".join(re.findall(r"<[a-z]+ [^>]*>", html)).replace(" one", "")


def test_the_session_expires():
    from django.conf import settings

    assert settings.SESSION_EXPIRE_AT_BROWSER_CLOSE
    assert 0 < settings.SESSION_COOKIE_AGE <= 12 * 3600


def test_overview_shows_each_figure(routed_items, reason_codes):
    ids = routed_items(3)
    manager = login_client("mgr-o", "escalation_manager")
    for _ in ids[:2]:
        html = manager.post("/queues/start/", follow=True).content.decode()
        item_id = int(re.search(r'action="/review/(\d+)/decide/"', html).group(1))
        manager.post(
            f"/review/{item_id}/decide/", {"lease_token": token_of(html), "label": "approve"}
        )
    rendered_at = timezone.now()
    with time_machine.travel(rendered_at, tick=False):
        r = manager.get("/overview/")
    assert r.status_code == 200
    html = r.content.decode()
    for title in (
        "Queue depth",
        "Oldest waiting item",
        "Decisions per hour",
        "Override rate per model version",
        "Override rate per routing reason",
        "SLA breaches per day",
    ):
        assert title in html
    assert "credit-default:3: 0% of 2" in html
    assert "high_amount: 0% of 2" in html
    assert "2 decisions in the last 24 hours" in html
    # the third item is in review (a decision opens the next case at once), none waits
    # or is escalated, none is past due
    depth_row = '<th scope="row">default</th>' + '<td class="num">{}</td>' * 3
    assert depth_row.format(0, 1, 0) in html
    assert "0 in 14 days; 0 undecided items past due now." in html
    # the page rendered with the current time
    assert f"As of {rendered_at:%Y-%m-%d %H:%M} UTC." in html


def test_decisions_made_in_the_browser_show_through_the_api(
    reviewer, routed_items, producer_client
):
    (item_id,) = routed_items(1)
    html = reviewer.post("/queues/start/", follow=True).content.decode()
    reviewer.post(f"/review/{item_id}/decide/", {"lease_token": token_of(html), "label": "approve"})
    prediction_id = ReviewItem.objects.get(id=item_id).prediction_id
    body = producer_client.get(f"/api/v1/predictions/{prediction_id}/").json()
    assert body["status"] == "decided"
    assert body["final"]["source"] == "reviewer"


@pytest.mark.parametrize(
    "path",
    [
        "/admin/registry/modelversion/",
        "/admin/registry/reasoncode/",
        "/admin/queues/queue/",
        "/admin/queues/queuemembership/",
        "/admin/queues/queuemembership/add/",
        "/admin/auth/user/",
    ],
)
def test_the_admin_manages_models_reason_codes_queues_memberships_and_accounts(path):
    admin = login_client("root-ui", "admin")
    r = admin.get(path)
    assert r.status_code == 200
    assert "unsafe-inline" not in r["Content-Security-Policy"]


def test_the_screen_hides_exactly_what_the_api_hides(reviewer, routed_items):
    from apps.reviews.outputs import public_features as api_public_features
    from apps.ui.selectors import case_view

    (item_id,) = routed_items(1)
    reviewer.post("/queues/start/")
    item = ReviewItem.objects.select_related("prediction__model_version").get(id=item_id)
    shown = dict(case_view(item=item)["features"])
    assert set(shown) == set(api_public_features(item)) == {"income", "region", "homeowner"}
