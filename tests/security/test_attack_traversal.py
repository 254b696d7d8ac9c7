"""ORM filter and ordering traversal in query parameters (the Label Studio class of
attack: ``?reviewer__password__startswith=a`` answering differently for the right and
the wrong prefix leaks a password hash one character at a time).

List endpoints, the review screens and the admin's list pages get lookups and
orderings that reach passwords, tokens and other queues' features. The answer must not
depend on the secret: asked with the true prefix and with a wrong one, the answers are
the same (the parameters are ignored, docs/api-decisions.md) or a 400. A tampered
pagination cursor is a 400 too, never a 500.
"""

import base64
import re
from urllib.parse import urlencode

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from apps.core.pagination import ResultsCursorPagination
from apps.labels.services import ExportRequest, export_create
from apps.reviews.services.decisions import review_item_escalate
from apps.reviews.services.leases import review_item_claim
from tests.factories import model_spec, prediction_body
from tests.helpers import database_state

pytestmark = pytest.mark.django_db

PASSWORD = "s3cret-Password-Zz"

# (path, role) of every list: the API's collections and the HTML pages that list.
API_LISTS = [
    ("/api/v1/models/", "admin"),
    ("/api/v1/predictions/", "producer"),
    ("/api/v1/escalations/", "escalation_manager"),
    ("/api/v1/exports/", "pipeline"),
    ("/api/v1/labels/", "pipeline"),
]
UI_LISTS = [
    ("/queues/", "reviewer"),
    ("/escalations/", "escalation_manager"),
    ("/overview/", "escalation_manager"),
    ("/review/", "reviewer"),
]

# Lookups a filter backend would turn into a JOIN to a secret; %s is the guessed prefix.
TRAVERSALS = [
    "reviewer__password__startswith",
    "raised_by__password__startswith",
    "claimed_by__password__startswith",
    "owner__password__startswith",
    "owner__password__regex",
    "created_by__password__startswith",
    "decided_by__password__startswith",
    "leased_by__password__startswith",
    "producer__password__startswith",
    "user__password__startswith",
    "password__startswith",
    "created_by__auth_token__key__startswith",
    "item__leased_by__password__startswith",
    "prediction__features__income__gt",
    "item__prediction__context__channel",
    "model_version__predictions__features__income__gte",
    "queue__name",
    "item__queue__name",
]
ORDERINGS = ["ordering", "o", "sort", "order_by", "order"]
ORDERED_FIELDS = [
    "leased_by__password",
    "-raised_by__password",
    "owner__password",
    "-created_by__password",
    "reviewer__password",
    "item__prediction__features__income",
    "password",
]


def prefixes(secret: str) -> tuple[str, str]:
    """A true prefix of the secret and a wrong one of the same length."""
    true = secret[:6]
    return true, true[:-1] + ("A" if true[-1] != "A" else "B")


def comparable(response) -> tuple:
    """What an attacker observes, minus what changes from one call to the next (signed
    download links carry their expiry)."""
    if response["Content-Type"].startswith("application/json") and response.content:
        body = response.json()
        for row in body.get("results", []) if isinstance(body, dict) else []:
            row.pop("download_url", None)
        return response.status_code, body
    content = b"".join(response.streaming_content) if response.streaming else response.content
    # HTML pages embed a fresh CSRF token and relative times: compare all but those.
    if response["Content-Type"].startswith("text/html"):
        text = re.sub(r"[A-Za-z0-9]{64}", "", content.decode())  # CSRF tokens
        return response.status_code, re.sub(r"\d+", "0", text)
    return response.status_code, content


def same_answers(get, first: str, second: str) -> tuple[tuple, tuple]:
    """The two answers, asked again (up to three times) while they differ: the label
    feed shows a label once no older transaction is open anywhere on the server, so
    two calls may see one more label. A real leak differs every time."""
    for _ in range(3):
        a, b = comparable(get(first)), comparable(get(second))
        if a == b:
            break
    return a, b


def assert_independent(get, path: str, param: str, secret: str) -> None:
    true, wrong = prefixes(secret)
    urls = [f"{path}?{urlencode({param: value})}" for value in (true, wrong)]
    for url in urls:
        r = get(url)
        assert r.status_code < 500, (path, param, r.status_code)
        if r.status_code == 400:
            assert param in r.content.decode(), (path, param, r.content)
    a, b = same_answers(get, *urls)
    assert a == b, (path, param)


@pytest.fixture
def secrets(world):
    """Every member and outsider gets a known password; the first one's hash and token
    are the secrets an attacker would read."""
    for side in (world.members, world.outsiders):
        for client in side.values():
            client.user.set_password(PASSWORD)
            client.user.save(update_fields=["password"])
    victim = world.outsiders["reviewer"].user
    victim.refresh_from_db()
    return {"hash": victim.password, "token": Token.objects.get(user=victim).key}


@pytest.mark.parametrize("path, role", API_LISTS)
def test_api_lists_ignore_lookups_that_reach_secrets(world, secrets, path, role):
    client = world.members[role]
    before = database_state()
    for lookup in TRAVERSALS:
        secret = secrets["token"] if "auth_token" in lookup else secrets["hash"]
        assert_independent(client.get, path, lookup, secret)
    for param in ORDERINGS:
        for field in ORDERED_FIELDS:
            true, wrong = (field, field.lstrip("-") + "x")
            a, b = same_answers(client.get, f"{path}?{param}={true}", f"{path}?{param}={wrong}")
            assert a[0] < 500 and a == b, (path, param, field)
    assert database_state() == before


def test_ignored_parameters_do_not_change_the_answer(world, secrets):
    # given every list, asked plainly
    for path, role in API_LISTS:
        client = world.members[role]
        # when the same list is asked with every traversal at once
        query = {lookup: "a" for lookup in TRAVERSALS} | {"ordering": "-raised_by__password"}
        # then the answer is the same: nothing was applied
        plain, tampered = same_answers(client.get, path, f"{path}?{urlencode(query)}")
        assert plain == tampered, path


@pytest.mark.parametrize("path, role", UI_LISTS)
def test_review_screens_ignore_lookups_that_reach_secrets(world, secrets, path, role):
    browser = Client()
    assert browser.login(username=world.members[role].user.username, password=PASSWORD)
    for lookup in TRAVERSALS[:8]:
        assert_independent(browser.get, path, lookup, secrets["hash"])
    for param in ORDERINGS:
        assert_independent(browser.get, path, param, "-raised_by__password")


ADMIN_LISTS = [
    "/admin/webhooks/webhooksubscription/",
    "/admin/webhooks/webhookdelivery/",
    "/admin/predictions/prediction/",
    "/admin/reviews/reviewitem/",
    "/admin/queues/queuemembership/",
    "/admin/registry/modelversion/",
]


@pytest.mark.parametrize("path", ADMIN_LISTS)
def test_admin_lists_refuse_relations_outside_their_filters(world, secrets, path):
    # Django's admin applies lookups on a model's own fields (its admins are
    # superusers), but refuses a relation that is not one of its list filters: 400.
    browser = Client()
    assert browser.login(username=world.members["admin"].user.username, password=PASSWORD)
    for lookup in (
        "created_by__password__startswith",
        "subscription__created_by__password__startswith",
        "user__password__startswith",
        "model_version__created_by__password__startswith",
        "leased_by__password__startswith",
        "item__leased_by__password__startswith",
        "prediction__review_item__leased_by__password__startswith",
    ):
        true, wrong = prefixes(secrets["hash"])
        answers = [browser.get(f"{path}?{urlencode({lookup: v})}") for v in (true, wrong)]
        statuses = {r.status_code for r in answers}
        # 400 (a disallowed lookup) or a redirect to ?e=1 (a field the model lacks)
        assert statuses <= {400, 302}, (path, lookup, statuses)
        assert len(statuses) == 1, (path, lookup)


def encoded_cursor(query: str) -> str:
    return base64.b64encode(query.encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        encoded_cursor("p=abc"),
        encoded_cursor("p=1%00"),
        encoded_cursor("p=2026-13-45T99:00:00"),
        encoded_cursor("o=abc&p=1"),
        encoded_cursor("o=-5&r=1&p=1"),
        encoded_cursor("o=99999999999999999999999&p=1"),
        encoded_cursor("p=" + "9" * 5000),
        encoded_cursor("p=\udcff".encode("utf-8", "surrogatepass").decode("latin-1")),
        "not base64 at all",
        "",
        "%00",
    ],
)
def test_a_tampered_cursor_is_a_4xx_on_every_list(world, cursor):
    before = database_state()
    for path, role in API_LISTS:
        if path == "/api/v1/labels/":
            continue  # its cursor is `after`: tests/labels
        client = world.members[role]
        r = client.get(f"{path}?{urlencode({'cursor': cursor})}")
        if r.status_code == 200:
            # an empty or ignored cursor is the first page
            assert r.json()["results"] is not None
            continue
        assert r.status_code == 400, (path, cursor, r.status_code, r.content[:300])
        assert r.json()["error"]["code"] == "invalid_cursor", r.content
    assert database_state() == before


def more_rows(world, role: str) -> None:
    """Two more rows in the list of the member of ``role`` (the world seeds one or two):
    enough that a page of one and a page of two differ from the whole list."""
    members, own = world.members, world.own
    for k in range(2):
        if role == "admin":
            r = members["admin"].post(
                "/api/v1/models/", model_spec(name=f"page-model-{k}"), format="json"
            )
            assert r.status_code == 201, r.content
        elif role == "producer":
            r = members["producer"].post(
                "/api/v1/predictions/",
                prediction_body(f"page-{k}", model=own["model_ref"]),
                format="json",
            )
            assert r.status_code == 201, r.content
        elif role == "escalation_manager":
            reviewer = members["reviewer"].user
            item = review_item_claim(user=reviewer, queue="default")
            review_item_escalate(
                user=reviewer, item_id=item.id, token=item.lease_token, reason="needs_second_look"
            )
        else:
            export_create(user=members[role].user, request=ExportRequest(format="jsonl"))


# What a page of each ``page_size`` holds, with the default page scaled to 1 and the
# cap to 2 (docs/api-decisions.md: capped at 1,000; not a positive number: the default).
PAGE_SIZES = {
    "-1": "default",
    "0": "default",
    "abc": "default",
    "1e3": "default",
    "\x00": "default",
    "3": "cap",
    "10000000000000000000000": "cap",
}


@pytest.mark.parametrize("path, role", [(p, r) for p, r in API_LISTS if p != "/api/v1/labels/"])
def test_page_size_abuse_is_clamped_or_ignored(world, path, role, monkeypatch):
    # the documented sizes: a page of 100 unless asked, never more than 1,000
    assert (ResultsCursorPagination.page_size, ResultsCursorPagination.max_page_size) == (
        100,
        1000,
    )
    # given a list of at least three rows, and the sizes scaled down to 1 and 2
    client = world.members[role]
    more_rows(world, role)
    assert len(client.get(path).json()["results"]) >= 3
    monkeypatch.setattr(ResultsCursorPagination, "page_size", 1)
    monkeypatch.setattr(ResultsCursorPagination, "max_page_size", 2)
    for size, page in PAGE_SIZES.items():
        # when the list is asked for that page size
        r = client.get(f"{path}?{urlencode({'page_size': size})}")
        # then an abusive size is clamped to the cap or ignored for the default
        assert r.status_code == 200, (path, size, r.content[:200])
        body = r.json()
        assert len(body["results"]) == (1 if page == "default" else 2), (path, size, body)
        assert body["next"] is not None, (path, size)
