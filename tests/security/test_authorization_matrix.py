"""The authorization matrix: every operation x every caller x objects of both queues.

``OPERATIONS`` is the one table of the API: for each operation of the OpenAPI schema
(``METHOD path`` as the schema writes it), the roles that may call it, the kind of
object each path parameter names, and a request that is valid, so that only the
authentication, role and queue checks can stop it. The table must cover exactly the
schema's operations and every route under ``/api/v1/`` that Django resolves: a new
endpoint fails this suite until it is entered here with the roles that may call it.

For each operation and caller (an account per role in queue ``default``, the same
roles in queue ``foreign``, no credentials, a token that is not one, an inactive
account holding every role):

- no credentials, a bad token, an inactive account: 401 with the contract's body;
- a role that is not allowed: 403 ``permission_denied``;
- an allowed role on an object of the other queue (for predictions and exports, of
  another account): 404 without the object's contents, and lists never show them;
- after every refused call the database is as it was (``database_state``);
- an allowed role on its own objects gets its success status: the refusals above come
  from the checks, not from a request that could never succeed.

The HTML screens (``ui:*``) and the Django admin get the same treatment with a browser
session; a session without the CSRF token is refused on every unsafe method. Whatever
is public (``/healthz``, ``/metrics``, the schema, the landing page) is listed in
``PUBLIC`` and asserted public; any other route must appear in one of the tables.
"""

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client, override_settings
from django.urls import URLResolver, get_resolver, reverse
from django.utils.crypto import get_random_string
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from apps.labels.models import ExportJob
from apps.labels.services import export_build, export_download_url
from apps.reviews.services.leases import review_item_claim
from tests.factories import ROLES, make_client, model_spec, prediction_body
from tests.helpers import database_state
from tests.security.world import World, world_seed

QUEUE_OF_SIDE = {"own": "default", "foreign": "foreign"}
OTHER_SIDE = {"own": "foreign", "foreign": "own"}

# What a call on the other queue's objects must answer.
NOT_FOUND = "not_found"  # the object does not exist for the caller: 404
HIDDEN = "hidden"  # a list: the caller's own objects, never the other queue's
UNSCOPED = "unscoped"  # creates an object; names nothing of a queue


@dataclass(frozen=True)
class Op:
    """One API operation: who may call it and a valid request for it.

    ``request`` takes the objects of one side (``objects()``) and returns the JSON body
    (for POST) or the query (for GET). ``shared`` names the allowed roles that see
    every queue's objects by design (so the other side answers them 200).
    """

    roles: frozenset[str]
    ok: int
    params: dict[str, str] = field(default_factory=dict)
    request: Callable[[dict[str, Any]], dict[str, Any]] = lambda o: {}
    foreign: str = NOT_FOUND
    shared: frozenset[str] = frozenset()


REVIEWERS = frozenset({"reviewer", "escalation_manager"})
MANAGERS = frozenset({"escalation_manager"})
PIPELINE = frozenset({"pipeline"})
ADMIN = frozenset({"admin"})
# Models are shared: every model whatever its queue, for those who work with models.
MODEL_READERS = frozenset({"producer", "reviewer", "escalation_manager", "admin"})
# A producer reads the predictions it sent; an admin reads all of them.
PREDICTION_READERS = frozenset({"producer", "admin"})


def _lease(o: dict[str, Any]) -> dict[str, Any]:
    return {"lease_token": o["lease_token"]}


OPERATIONS: dict[str, Op] = {
    "GET /api/v1/models/": Op(MODEL_READERS, 200, foreign=HIDDEN, shared=MODEL_READERS),
    "POST /api/v1/models/": Op(
        ADMIN,
        201,
        request=lambda o: model_spec(
            name="matrix-model", routing={**model_spec()["routing"], "queue": o["queue"]}
        ),
        foreign=UNSCOPED,
    ),
    "GET /api/v1/models/{ref}/": Op(
        MODEL_READERS, 200, params={"ref": "model"}, shared=MODEL_READERS
    ),
    "GET /api/v1/predictions/": Op(
        PREDICTION_READERS, 200, foreign=HIDDEN, shared=frozenset({"admin"})
    ),
    "POST /api/v1/predictions/": Op(
        frozenset({"producer"}),
        201,
        request=lambda o: prediction_body("matrix-p", model=o["model_ref"]),
        foreign=UNSCOPED,
    ),
    "GET /api/v1/predictions/{prediction_id}/": Op(
        PREDICTION_READERS,
        200,
        params={"prediction_id": "prediction"},
        shared=frozenset({"admin"}),
    ),
    # The other side of a claim names the other queue.
    "POST /api/v1/queue/claim/": Op(REVIEWERS, 200, request=lambda o: {"queue": o["queue"]}),
    "POST /api/v1/reviews/{item_id}/heartbeat/": Op(
        REVIEWERS, 200, params={"item_id": "item"}, request=_lease
    ),
    "POST /api/v1/reviews/{item_id}/release/": Op(
        REVIEWERS, 200, params={"item_id": "item"}, request=_lease
    ),
    "POST /api/v1/reviews/{item_id}/decide/": Op(
        REVIEWERS,
        200,
        params={"item_id": "item"},
        request=lambda o: {**_lease(o), "label": "approve"},
    ),
    "POST /api/v1/reviews/{item_id}/escalate/": Op(
        REVIEWERS,
        200,
        params={"item_id": "item"},
        request=lambda o: {**_lease(o), "reason": "needs_second_look"},
    ),
    "GET /api/v1/escalations/": Op(MANAGERS, 200, foreign=HIDDEN),
    "POST /api/v1/escalations/{escalation_id}/claim/": Op(
        MANAGERS, 200, params={"escalation_id": "escalation"}
    ),
    "POST /api/v1/escalations/{escalation_id}/resolve/": Op(
        MANAGERS,
        200,
        params={"escalation_id": "escalation"},
        request=lambda o: {"label": "deny", "comment": "matrix"},
    ),
    "POST /api/v1/escalations/{escalation_id}/return/": Op(
        MANAGERS,
        200,
        params={"escalation_id": "escalation"},
        request=lambda o: {"comment": "matrix"},
    ),
    "GET /api/v1/labels/": Op(PIPELINE, 200, request=lambda o: {"format": "jsonl"}, foreign=HIDDEN),
    "GET /api/v1/exports/": Op(PIPELINE, 200, foreign=HIDDEN),
    "POST /api/v1/exports/": Op(
        PIPELINE, 202, request=lambda o: {"format": "csv"}, foreign=UNSCOPED
    ),
    "GET /api/v1/exports/{export_id}/": Op(PIPELINE, 200, params={"export_id": "export"}),
    # With the genuine signed link of the object's export: a leaked link of another
    # account's export is no way in.
    "GET /api/v1/exports/{export_id}/download/": Op(
        PIPELINE,
        200,
        params={"export_id": "export"},
        request=lambda o: {"token": o["export_token"]},
    ),
}

CALLERS = (
    *(f"member:{role}" for role in ROLES),
    *(f"outsider:{role}" for role in ROLES),
    "anonymous",
    "bad_token",
    "inactive",
)
UNAUTHENTICATED = {
    "anonymous": "not_authenticated",
    "bad_token": "authentication_failed",
    "inactive": "authentication_failed",
}


# -- the seeded objects ---------------------------------------------------------------


@pytest.fixture(scope="module")
def module_world(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[World]:
    """The world, seeded once for this module in a transaction rolled back at its end.

    Each test runs in a savepoint inside it (``seeded``), rolled back after the test:
    every test starts from the same seeded state, at the cost of one seed.
    Besides the world: per queue an item leased by the escalation manager (its target
    for the review actions) and the pipeline's export built, with its signed link.
    """
    exports = override_settings(EXPORT_ROOT=tmp_path_factory.mktemp("exports"))
    with django_db_blocker.unblock(), exports, transaction.atomic():
        world = world_seed()
        for side, clients in (("own", world.members), ("foreign", world.outsiders)):
            o = world.objects(side)
            manager = clients["escalation_manager"].user
            item = review_item_claim(user=manager, queue=QUEUE_OF_SIDE[side])
            o["manager_item"], o["manager_lease_token"] = item.id, str(item.lease_token)
            export_build(job_id=o["export"])
            job = ExportJob.objects.get(id=o["export"])
            url = export_download_url(job=job, request=None)
            assert url is not None, job.error
            (o["export_token"],) = parse_qs(urlsplit(url).query)["token"]
        yield world
        transaction.set_rollback(True)


@pytest.fixture
def seeded(module_world: World, db) -> World:
    """The module's world, for one test: pytest-django's ``db`` runs the test in a
    savepoint and rolls back what it changed."""
    return module_world


def objects(world: World, side: str, role: str | None) -> dict[str, Any]:
    """The objects of ``side`` a caller with ``role`` acts on: the review actions
    name the item the caller holds (the reviewer's for anyone else)."""
    o = {**world.objects(side), "queue": QUEUE_OF_SIDE[side]}
    if role == "escalation_manager":
        o["item"], o["lease_token"] = o["manager_item"], o["manager_lease_token"]
    return o


def markers(world: World, side: str) -> tuple[str, ...]:
    """Strings that only the objects of ``side`` show: external ids, the model name,
    the export id."""
    queue = QUEUE_OF_SIDE[side]
    o = world.objects(side)
    return (o["external_id"], f"{queue}-item-", f"credit-{queue}", o["export"])


def screen_markers(world: World, side: str) -> tuple[str, ...]:
    """The same on a screen, and the queue's name as a form value."""
    return (*markers(world, side), f'value="{QUEUE_OF_SIDE[side]}"')


def caller(world: World, name: str) -> tuple[APIClient, str | None, str]:
    """The client, role and side (whose objects are its own) of a caller."""
    if name in UNAUTHENTICATED:
        client = APIClient()
        if name == "bad_token":
            client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
        if name == "inactive":
            client = make_client("inactive", *ROLES)
            User.objects.filter(id=client.user.id).update(is_active=False)
        return client, None, "own"
    group, role = name.split(":")
    clients = world.members if group == "member" else world.outsiders
    return clients[role], role, "own" if group == "member" else "foreign"


def path_of(operation: str, o: dict[str, Any]) -> str:
    template = operation.split(" ", 1)[1]
    return template.format(**{p: o[kind] for p, kind in OPERATIONS[operation].params.items()})


def send(client, operation: str, o: dict[str, Any]):
    method = operation.split(" ", 1)[0]
    path = path_of(operation, o)
    data = OPERATIONS[operation].request(o)
    if method == "GET":
        return client.get(path, data)
    assert method == "POST", f"send() knows GET and POST; teach it {method}"
    return client.post(path, data, format="json")


def content(response) -> bytes:
    """The whole body, streamed or not. A streamed answer is closed by the test client
    once read; closing one here would close the connection, and the module's
    transaction with it (``request_finished``)."""
    return response.getvalue()


def assert_unchanged(before: dict[str, str], what: str) -> None:
    after = database_state()
    changed = sorted(t for t in before if before[t] != after.get(t))
    assert after == before, f"{what} changed the database: {changed}"


def assert_not_found(response, hidden: tuple[str, ...]) -> None:
    body = content(response)
    assert response.status_code == 404, body
    error = response.json()
    assert set(error) == {"error"}, error
    assert error["error"]["code"].endswith("not_found"), error
    leaked = [m for m in hidden if m.encode() in body]
    assert not leaked, f"a 404 shows the object's contents: {leaked}"


# -- the table covers the API ---------------------------------------------------------


def schema_operations() -> set[str]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return {
        f"{method.upper()} {path}"
        for path, operations in schema["paths"].items()
        for method in operations
    }


def routes(
    resolver: URLResolver | None = None, prefix: str = "", namespace: str = ""
) -> Iterator[tuple[str, str, Any]]:
    """Every URL pattern as (route, name with its namespace, pattern), Django's
    resolver walked depth first; the admin's as one entry."""
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            if entry.namespace == "admin":
                yield route, "admin", entry
                continue
            inner = ":".join(n for n in (namespace, entry.namespace or "") if n)
            yield from routes(entry, route, inner)
        else:
            name = ":".join(n for n in (namespace, entry.name or "") if n)
            yield route, name, entry


def openapi_path(route: str) -> str:
    """A Django route as the schema writes it: ``<int:item_id>`` -> ``{item_id}``."""
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)


def api_routes() -> set[str]:
    """``METHOD path`` of every view Django serves under /api/v1/."""
    found = set()
    for route, _name, pattern in routes():
        if not route.startswith("api/v1/"):
            continue
        view = getattr(pattern.callback, "view_class", None)
        assert view is not None, f"/{route} is not a DRF APIView: the schema cannot show it"
        methods = [m for m in view.http_method_names if m not in ("options", "head")]
        found |= {f"{m.upper()} {openapi_path(route)}" for m in methods if hasattr(view, m)}
    return found


def test_the_table_covers_exactly_the_operations_of_the_schema():
    in_schema = schema_operations()
    missing = sorted(in_schema - set(OPERATIONS))
    assert not missing, (
        "operations of the schema without an entry in OPERATIONS: "
        f"{missing}. Add each with the roles that may call it, the kind of object of each "
        "path parameter and a valid request."
    )
    stale = sorted(set(OPERATIONS) - in_schema)
    assert not stale, f"OPERATIONS names operations the schema does not have: {stale}"


def test_every_api_view_django_serves_is_in_the_schema_and_the_table():
    served = api_routes()
    assert served == set(OPERATIONS), (
        f"served but not in OPERATIONS: {sorted(served - set(OPERATIONS))}; "
        f"in OPERATIONS but not served: {sorted(set(OPERATIONS) - served)}"
    )


KINDS = {"model", "prediction", "item", "escalation", "export"}


def test_every_path_parameter_in_the_table_names_a_kind_of_object():
    for operation, op in OPERATIONS.items():
        assert set(op.params) == set(re.findall(r"{(\w+)}", operation)), operation
        assert set(op.params.values()) <= KINDS, (operation, "teach objects() the new kind")


def test_every_route_is_in_a_table():
    """A route outside /api/v1/ is a screen, the admin, or public by design."""
    screens = set(UI_PAGES) | set(UI_PUBLIC)
    unknown, seen = [], set()
    for route, name, _pattern in routes():
        if route.startswith("api/v1/") or name == "admin":
            continue
        seen.add(name)
        if name not in screens and "/" + route not in PUBLIC:
            unknown.append("/" + route)
    assert not unknown, (
        f"routes in no table: {unknown}. Add each to UI_PAGES (with its roles), or to "
        "PUBLIC with a test of what it shows."
    )
    assert screens <= seen, f"UI_PAGES names screens that do not exist: {screens - seen}"


# -- the matrix -----------------------------------------------------------------------


@pytest.mark.parametrize("who", CALLERS)
@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_the_matrix(seeded, operation, who):
    op = OPERATIONS[operation]
    client, role, side = caller(seeded, who)
    other = OTHER_SIDE[side]
    before = database_state()

    if role is None:
        # no credentials, or credentials that are not an active account's: 401, on
        # the objects of either queue alike
        for target in (side, other):
            o = objects(seeded, target, "reviewer")
            r = send(client, operation, o)
            assert r.status_code == 401, content(r)
            assert r.json()["error"]["code"] == UNAUTHENTICATED[who], r.json()
            assert r["WWW-Authenticate"].startswith("Token")
            # nor does OPTIONS describe the operation to them
            assert client.options(path_of(operation, o)).status_code == 401
        assert_unchanged(before, f"{who} on {operation}")
        return

    if role not in op.roles:
        # a valid request without the role: 403, whichever queue's objects it names
        # (the answer tells nothing of what exists)
        for target in (side, other):
            r = send(client, operation, objects(seeded, target, role))
            assert r.status_code == 403, content(r)
            assert r.json()["error"]["code"] == "permission_denied", r.json()
        assert_unchanged(before, f"{who} on {operation}")
        return

    if op.foreign == NOT_FOUND and role in op.shared:
        # by design this role sees every queue's objects
        r = send(client, operation, objects(seeded, other, role))
        assert r.status_code == 200, content(r)
    elif op.foreign == NOT_FOUND:
        # the other queue's object (the genuine id, token and link): 404
        r = send(client, operation, objects(seeded, other, role))
        assert_not_found(r, markers(seeded, other))
        assert_unchanged(before, f"{who} on {operation} of the other queue")

    # the same request on the caller's own objects succeeds
    r = send(client, operation, objects(seeded, side, role))
    body = content(r)
    assert r.status_code == op.ok, body
    if op.foreign == HIDDEN and role not in op.shared:
        assert any(m.encode() in body for m in markers(seeded, side)), body
        leaked = [m for m in markers(seeded, other) if m.encode() in body]
        assert not leaked, f"{who} lists objects of the other queue: {leaked}"


def csrf_cases() -> list[tuple[str, str]]:
    """Each unsafe operation with the first role allowed to call it."""
    return [
        (operation, min(op.roles, key=ROLES.index))
        for operation, op in OPERATIONS.items()
        if not operation.startswith(("GET ", "HEAD ", "OPTIONS "))
    ]


@pytest.mark.parametrize(("operation", "role"), csrf_cases())
def test_a_browser_session_without_the_csrf_token_is_refused(seeded, operation, role):
    # given a member with the role, logged in with a browser session (no API token)
    user = seeded.members[role].user
    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(user)
    before = database_state()
    o = objects(seeded, "own", role)
    # when it sends a valid request without the CSRF token: 403, nothing changed
    r = send(browser, operation, o)
    assert r.status_code == 403, content(r)
    assert r.json()["error"]["code"] == "permission_denied"
    assert "CSRF" in r.json()["error"]["message"]
    assert_unchanged(before, f"a session without CSRF token on {operation}")
    # and with the token the same request goes through: the session is a real one
    secret = get_random_string(32)
    browser.cookies[settings.CSRF_COOKIE_NAME] = secret
    browser.credentials(HTTP_X_CSRFTOKEN=secret)
    r = send(browser, operation, o)
    assert r.status_code == OPERATIONS[operation].ok, content(r)


# -- the HTML screens -----------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """One screen (``ui:<name>``): method, roles, the kind of object of its URL
    argument, valid form data and what a call on the other queue's objects answers."""

    method: str
    roles: frozenset[str]
    ok: frozenset[int]
    param: tuple[str, str] | None = None
    data: Callable[[dict[str, Any]], dict[str, Any]] = lambda o: {}
    foreign: str = NOT_FOUND


OK = frozenset({200})
REDIRECT = frozenset({302})

UI_PAGES: dict[str, Page] = {
    # an admin without a review role is sent to the overview
    "ui:queues": Page("GET", REVIEWERS | ADMIN, OK | REDIRECT, foreign=HIDDEN),
    "ui:start": Page("POST", REVIEWERS, REDIRECT, data=lambda o: {"queue": o["queue"]}),
    "ui:review": Page("GET", REVIEWERS, OK, foreign=UNSCOPED),
    "ui:decide": Page(
        "POST",
        REVIEWERS,
        REDIRECT,
        param=("item_id", "item"),
        data=lambda o: {**_lease(o), "label": "approve"},
    ),
    "ui:escalate": Page(
        "POST",
        REVIEWERS,
        REDIRECT,
        param=("item_id", "item"),
        data=lambda o: {**_lease(o), "reason": "needs_second_look"},
    ),
    "ui:release": Page("POST", REVIEWERS, REDIRECT, param=("item_id", "item"), data=_lease),
    "ui:heartbeat": Page("POST", REVIEWERS, OK, param=("item_id", "item"), data=_lease),
    "ui:escalations": Page("GET", MANAGERS, OK, foreign=HIDDEN),
    "ui:escalation": Page("GET", MANAGERS, OK, param=("escalation_id", "escalation")),
    "ui:escalation-claim": Page("POST", MANAGERS, REDIRECT, param=("escalation_id", "escalation")),
    "ui:escalation-resolve": Page(
        "POST",
        MANAGERS,
        REDIRECT,
        param=("escalation_id", "escalation"),
        data=lambda o: {"label": "deny", "comment": "matrix"},
    ),
    "ui:escalation-return": Page(
        "POST",
        MANAGERS,
        REDIRECT,
        param=("escalation_id", "escalation"),
        data=lambda o: {"comment": "matrix"},
    ),
    # counts per queue for whoever oversees the work: every queue by design
    "ui:overview": Page("GET", MANAGERS | ADMIN, OK, foreign=UNSCOPED),
}
# Logging in and out needs no account.
UI_PUBLIC = ("ui:login", "ui:logout")
UI_CALLERS = ("anonymous", *(c for c in CALLERS if ":" in c))


def ui_send(browser: Client, name: str, o: dict[str, Any]):
    page = UI_PAGES[name]
    kwargs = {page.param[0]: o[page.param[1]]} if page.param else {}
    path = reverse(name, kwargs=kwargs)
    if page.method == "GET":
        return browser.get(path)
    return browser.post(path, page.data(o))


def ui_caller(world: World, who: str) -> tuple[Client, str | None, str]:
    browser = Client()
    if who == "anonymous":
        return browser, None, "own"
    group, role = who.split(":")
    clients = world.members if group == "member" else world.outsiders
    browser.force_login(clients[role].user)
    return browser, role, "own" if group == "member" else "foreign"


@pytest.mark.parametrize("who", UI_CALLERS)
@pytest.mark.parametrize("name", list(UI_PAGES))
def test_the_screens(seeded, name, who):
    page = UI_PAGES[name]
    browser, role, side = ui_caller(seeded, who)
    other = OTHER_SIDE[side]
    before = database_state()

    if role is None:
        # anonymous: sent to log in, nothing done
        r = ui_send(browser, name, objects(seeded, side, "reviewer"))
        assert r.status_code == 302, r.content
        assert r["Location"].startswith(f"{settings.LOGIN_URL}?next="), r["Location"]
        assert_unchanged(before, f"anonymous on {name}")
        return

    if role not in page.roles:
        r = ui_send(browser, name, objects(seeded, side, role))
        assert r.status_code == 403, r.content
        assert_unchanged(before, f"{who} on {name}")
        return

    if page.foreign == NOT_FOUND:
        r = ui_send(browser, name, objects(seeded, other, role))
        assert r.status_code == 404, r.content
        leaked = [m for m in screen_markers(seeded, other) if m.encode() in r.content]
        assert not leaked, f"a 404 page shows the object's contents: {leaked}"
        assert_unchanged(before, f"{who} on {name} of the other queue")

    r = ui_send(browser, name, objects(seeded, side, role))
    assert r.status_code in page.ok, r.content
    if page.foreign == HIDDEN and r.status_code == 200:
        assert any(m.encode() in r.content for m in screen_markers(seeded, side)), r.content
        leaked = [m for m in screen_markers(seeded, other) if m.encode() in r.content]
        assert not leaked, f"{who} sees objects of the other queue on {name}: {leaked}"


@pytest.mark.parametrize("name", [n for n, p in UI_PAGES.items() if p.method == "POST"])
def test_a_form_without_the_csrf_token_is_refused(seeded, name):
    role = min(UI_PAGES[name].roles, key=ROLES.index)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(seeded.members[role].user)
    before = database_state()
    r = ui_send(browser, name, objects(seeded, "own", role))
    assert r.status_code == 403, r.content
    assert_unchanged(before, f"{name} without the CSRF token")


# -- the Django admin -----------------------------------------------------------------


def admin_requests(world: World) -> list[tuple[str, str, dict[str, Any] | None]]:
    """The admin's index, each registered model's list and add form (filled in for
    queues, reason codes and accounts), and the confirmed delete of a queue."""
    from apps.queues.models import Queue
    from apps.registry.models import ReasonCode

    filled = {
        Queue: {"name": "matrix-queue"},
        ReasonCode: {"model_name": "credit-default", "code": "matrix", "active": "on"},
        User: {"username": "matrix-user", "password1": "x9!matrix", "password2": "x9!matrix"},
    }
    requests: list[tuple[str, str, dict[str, Any] | None]] = [("GET", "/admin/", None)]
    for model in admin.site._registry:
        info = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        requests.append(("GET", reverse(f"{info}_changelist"), None))
        requests.append(("POST", reverse(f"{info}_add"), filled.get(model, {"name": "matrix"})))
    queue = Queue.objects.get(name="foreign")
    requests.append(
        ("POST", reverse("admin:queues_queue_delete", args=[queue.id]), {"post": "yes"})
    )
    return requests


@pytest.mark.parametrize("who", [c for c in UI_CALLERS if not c.endswith(":admin")])
def test_the_admin_is_for_admins_only(seeded, who):
    browser, _, _ = ui_caller(seeded, who)
    before = database_state()
    for method, path, data in admin_requests(seeded):
        r = browser.get(path) if method == "GET" else browser.post(path, data)
        # sent to the admin's login, nothing done
        assert r.status_code == 302, (method, path, r.status_code)
        assert r["Location"].startswith(reverse("admin:login") + "?next="), r["Location"]
        assert_unchanged(before, f"{who}: {method} {path}")


def test_an_admin_reaches_the_admin(seeded):
    browser, _, _ = ui_caller(seeded, "member:admin")
    for method, path, _data in admin_requests(seeded):
        if method == "GET":
            assert browser.get(path).status_code == 200, path


# -- public by design -----------------------------------------------------------------

# Routes any caller may use, each with a test below of what it shows.
PUBLIC = ("/healthz", "/metrics", "/api/schema/", "/api/docs/", "/")


def test_healthz_is_public_and_says_only_how_the_backends_are(seeded):
    before = database_state()
    r = Client().get("/healthz")
    assert r.status_code == 200
    assert set(r.json()) == {"database", "broker"}
    assert r.json()["database"] == "ok"
    assert Client().post("/healthz").status_code == 405
    assert_unchanged(before, "/healthz")


def test_metrics_are_open_unless_a_token_is_set(seeded, settings):
    before = database_state()
    settings.REVIEW_METRICS_TOKEN = ""
    r = Client().get("/metrics")
    assert r.status_code == 200
    assert r["Content-Type"].startswith("text/plain")
    # with a token set: only the bearer of that token, not an API token
    settings.REVIEW_METRICS_TOKEN = "scrape-secret"
    admin_token = seeded.members["admin"].token
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Token {admin_token}"},
    ):
        r = Client().get("/metrics", headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"]["code"] == "not_authenticated"
    r = Client().get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
    assert r.status_code == 200
    assert Client().post("/metrics").status_code == 405
    assert_unchanged(before, "/metrics")


def test_the_schema_docs_and_landing_page_are_public_and_show_no_prediction(seeded):
    before = database_state()
    for path in ("/api/schema/", "/api/docs/", "/"):
        r = Client().get(path)
        assert r.status_code == 200, path
        shown = [
            m
            for side in ("own", "foreign")
            for m in (seeded.objects(side)["external_id"], f"{QUEUE_OF_SIDE[side]}-item-")
            if m.encode() in r.content
        ]
        assert not shown, f"{path} shows predictions: {shown}"
    assert_unchanged(before, "the public pages")
