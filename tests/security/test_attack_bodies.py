"""Hostile request bodies, replayed against every JSON write endpoint: oversized (with a
declared, lying, negative or no length, chunked), nested 100,000 deep, huge numbers,
NaN and Infinity, NUL characters and lone surrogates, invalid UTF-8, duplicate keys,
wrong content types and a batch one item too large.

Every one is a clear 4xx with the contract's error body, and the database is as it was
(``database_state``). A 5xx, or a Python exception escaping the test client, fails.
"""

import io
import json
from typing import Any

import pytest
from django.test import Client

from tests.factories import prediction_body
from tests.helpers import database_state
from tests.security.world import write_calls

pytestmark = pytest.mark.django_db

HUGE_INT = "1" + "0" * 5000  # over Python's 4,300 digit limit for int()
DEEP = 100_000
MARK = '"@@value@@"'


def with_raw(body: dict, key: str, raw: str) -> str:
    """``body`` as JSON text with the value of ``key`` replaced by the raw JSON ``raw``."""
    return json.dumps({**body, key: "@@value@@"}).replace(MARK, raw, 1)


def main_key(name: str, body: dict) -> str:
    """Where a hostile value goes: the free-form part of a prediction, else the first
    field the endpoint reads."""
    if name == "predictions":
        return "context"
    if name == "predictions-bulk":
        return "items"
    return next(iter(body))


def assert_refused(response, before: dict, status: int | tuple[int, ...] = 400) -> dict:
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, (response.status_code, response.content[:500])
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"} and error["message"]
    assert database_state() == before
    return error


def post_raw(client, path: str, data: str | bytes, content_type: str = "application/json"):
    return client.generic("POST", path, data, content_type)


# --- syntax the parser refuses, wherever it is ------------------------------------------

PARSER_REFUSALS = {
    "deep_arrays": lambda body, key: with_raw(body, key, "[" * DEEP + "]" * DEEP),
    "deep_objects": lambda body, key: with_raw(body, key, '{"a":' * DEEP + "1" + "}" * DEEP),
    "huge_integer": lambda body, key: with_raw(body, key, HUGE_INT),
    "huge_negative_integer": lambda body, key: with_raw(body, key, "-" + HUGE_INT),
    "invalid_utf8": lambda body, key: (
        with_raw(body, key, '"abc"').encode().replace(b"abc", b"a\xff\xfeb")
    ),
    "encoded_surrogate_utf8": lambda body, key: (
        with_raw(body, key, '"abc"').encode().replace(b"abc", b"a\xed\xa0\x80b")
    ),
    "duplicate_top_level_key": lambda body, key: (
        json.dumps(body)[:-1] + f", {json.dumps(key)}: {json.dumps(body[key])}}}"
    ),
    "duplicate_nested_key": lambda body, key: with_raw(body, key, '{"a": 1, "b": 2, "a": 3}'),
    "truncated": lambda body, key: json.dumps(body)[:-1],
    "byte_order_mark": lambda body, key: "\ufeff" + json.dumps(body),
    "trailing_garbage": lambda body, key: json.dumps(body) + " {}",
    "single_quotes": lambda body, key: json.dumps(body).replace('"', "'"),
}


@pytest.mark.parametrize("attack", sorted(PARSER_REFUSALS))
def test_malformed_bodies_are_400_everywhere(world, attack):
    before = database_state()
    for name, client, path, body in write_calls(world):
        data = PARSER_REFUSALS[attack](body, main_key(name, body))
        error = assert_refused(post_raw(client, path, data), before)
        assert error["code"] == "malformed_body", (name, error)


def test_a_duplicate_key_is_named(world):
    client = world.members["pipeline"]
    r = post_raw(client, "/api/v1/exports/", '{"format": "jsonl", "format": "csv"}')
    assert "duplicate key 'format'" in assert_refused(r, database_state())["message"]


# A lease token that is not a UUID is a lost lease (409, docs/api-decisions.md); a
# queue name that cannot exist is 404.
LOOKUPS = {("lease_token",): 409, ("queue",): 404}


@pytest.mark.parametrize(
    "literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", '"\\u0000"', '"\\ud800"']
)
def test_non_finite_numbers_and_unstorable_text_are_400_where_they_are_read(world, literal):
    # given each endpoint's main field holding a number or text PostgreSQL cannot store
    before = database_state()
    for name, client, path, body in write_calls(world):
        key = main_key(name, body)
        r = post_raw(client, path, with_raw(body, key, literal))
        # then it is a clear refusal (or the lookup it names fails: see LOOKUPS)
        assert_refused(r, before, (400, LOOKUPS.get((key,), 400)))


# --- every stored string, with a NUL or a lone surrogate --------------------------------


def string_paths(value: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(value, str):
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in string_paths(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in string_paths(v, (*path, i))]
    return []


def replaced(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = replaced(value[path[0]], path[1:], new)
    return copy


def renamed_keys(value: Any, suffix: str) -> Any:
    """``value`` with ``suffix`` appended to every key of every object in it."""
    if isinstance(value, dict):
        return {k + suffix: renamed_keys(v, suffix) for k, v in value.items()}
    if isinstance(value, list):
        return [renamed_keys(v, suffix) for v in value]
    return value


@pytest.mark.parametrize("bad", ["nul\x00byte", "lone\ud800", "\udfff"])
def test_every_string_of_every_body_refuses_unstorable_text(world, bad):
    before = database_state()
    for name, client, path, body in write_calls(world):
        for where in string_paths(body):
            # sent with ASCII escapes, as json.dumps writes them
            r = post_raw(client, path, json.dumps(replaced(body, where, f"x{bad}")))
            if name == "predictions-bulk":
                # a batch answers each item: this one is refused, nothing is stored
                assert r.status_code == 200, r.content
                answer = r.json()
                assert (answer["errors"], answer["created"]) == (1, 0)
                assert answer["results"][0]["error"]["code"] in ("invalid", "model_not_found")
                assert database_state() == before
                continue
            # a prediction naming no model it can find is 404, like any unknown model
            lookup = 404 if (name, where) == ("predictions", ("model",)) else 400
            assert_refused(r, before, (400, lookup)), (name, where)


@pytest.mark.parametrize("bad", ["\x00", "\ud800"])
def test_unstorable_keys_are_refused_or_ignored_never_stored(world, bad):
    # Strict bodies (models, predictions) refuse unknown keys; the others ignore them,
    # so the call may succeed, but the key is stored nowhere and nothing 500s.
    for name, client, path, body in write_calls(world):
        before = database_state()
        r = post_raw(client, path, json.dumps(renamed_keys(body, bad)))
        if name.startswith(("models", "predictions")):
            assert_refused(r, before)
        else:
            assert r.status_code < 500, (name, r.content)


# --- huge and non-finite numbers inside features, probabilities, context, the spec -------


NUMBER_LITERALS = ["NaN", "Infinity", "-Infinity", "1e999", "1e-999999", "9" * 4000, "-0.0"]


def number_paths(value: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in number_paths(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in number_paths(v, (*path, i))]
    return []


@pytest.mark.parametrize("literal", NUMBER_LITERALS)
def test_every_number_of_a_prediction_and_a_spec_survives_hostile_numbers(world, literal):
    # given every number of a prediction and of a model spec replaced by a hostile one
    calls = [c for c in write_calls(world) if c[0] in ("models", "predictions")]
    for name, client, path, body in calls:
        for where in number_paths(body):
            before = database_state()
            data = json.dumps(replaced(body, where, "@@value@@")).replace(MARK, literal, 1)
            r = post_raw(client, path, data)
            if literal in ("NaN", "Infinity", "-Infinity", "1e999"):
                # then a non-finite number is always refused, naming the field
                error = assert_refused(r, before)
                assert error["code"] == "invalid", (name, where, error)
            else:
                # and a finite one is refused or stored as a finite number; never a 500
                assert r.status_code < 500, (name, where, r.content)
                if r.status_code >= 400:
                    assert_refused(r, before, r.status_code)


# --- size --------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_413_everywhere(world, settings):
    limit = settings.MAX_BODY_BYTES
    padding = "x" * limit
    before = database_state()
    for name, client, path, body in write_calls(world):
        r = post_raw(client, path, with_raw(body, main_key(name, body), json.dumps(padding)))
        assert assert_refused(r, before, 413)["code"] == "body_too_large", name
    # the endpoint that takes no body refuses it just the same
    manager = world.members["escalation_manager"]
    r = post_raw(manager, f"/api/v1/escalations/{world.own['escalation']}/claim/", padding * 2)
    assert_refused(r, before, 413)


@pytest.mark.parametrize(
    "declared, status, code",
    [
        ("104857600000", 413, "body_too_large"),  # claims more than the limit
        ("-1", 400, "invalid_content_length"),
        ("ten", 400, "invalid_content_length"),
        ("12", 400, "malformed_body"),  # says less than is sent: the JSON is cut short
    ],
)
def test_a_lying_content_length_is_refused(world, declared, status, code):
    client = world.members["producer"]
    body = json.dumps(prediction_body("liar", model=world.own["model_ref"]))
    before = database_state()
    r = client.generic(
        "POST", "/api/v1/predictions/", body, "application/json", CONTENT_LENGTH=declared
    )
    assert assert_refused(r, before, status)["code"] == code


class Dechunked(io.BytesIO):
    """wsgi.input of a chunked request as gunicorn gives it: the decoded bytes, no
    length; counts what the application read."""

    def read(self, size=-1):
        data = super().read(size)
        self.taken = getattr(self, "taken", 0) + len(data)
        return data


def chunked(client: Client, path: str, data: bytes, *, terminated: bool = True):
    stream = Dechunked(data)
    extra = {
        "CONTENT_LENGTH": "",
        "HTTP_TRANSFER_ENCODING": "chunked",
        "wsgi.input": stream,
    }
    if terminated:
        extra["wsgi.input_terminated"] = True
    # RequestFactory's own wsgi.input is replaced by the dechunked stream.
    return client.generic("POST", path, b"", "application/json", **extra), stream


def test_a_chunked_body_over_the_limit_is_413_and_read_no_further(world, settings):
    client = world.members["producer"]
    limit = settings.MAX_BODY_BYTES
    body = json.dumps({"items": [prediction_body("c", model=world.own["model_ref"])]})
    data = body.encode() + b" " * (limit + 5000)
    before = database_state()
    r, stream = chunked(client, "/api/v1/predictions/", data)
    assert assert_refused(r, before, 413)["code"] == "body_too_large"
    assert stream.taken == limit + 1


def test_a_chunked_body_within_the_limit_is_read_like_any_other(world):
    client = world.members["producer"]
    body = json.dumps(prediction_body("chunked-ok", model=world.own["model_ref"]))
    r, _ = chunked(client, "/api/v1/predictions/", body.encode())
    assert r.status_code == 201, r.content
    # and a malformed one is a 400 like any other
    before = database_state()
    r, _ = chunked(client, "/api/v1/predictions/", body.encode()[:-2])
    assert assert_refused(r, before)["code"] == "malformed_body"


def test_a_chunked_body_a_server_does_not_end_is_411_unread(world):
    client = world.members["producer"]
    before = database_state()
    r, stream = chunked(client, "/api/v1/predictions/", b"{}" * 10, terminated=False)
    assert assert_refused(r, before, 411)["code"] == "length_required"
    assert getattr(stream, "taken", 0) == 0


def test_a_batch_of_1001_is_400_and_stores_nothing(world):
    items = [prediction_body(f"b-{i}", model=world.own["model_ref"]) for i in range(1001)]
    before = database_state()
    r = world.members["producer"].post("/api/v1/predictions/", {"items": items}, format="json")
    assert "items" in assert_refused(r, before)["details"]


# --- content types ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "",
        "application/xml",
        "text/html",
        "application/json-patch+json",
        "multipart/form-data; boundary=xyz",
    ],
)
def test_wrong_content_types_are_415(world, content_type):
    before = database_state()
    for name, client, path, body in write_calls(world):
        if name == "models" and content_type.startswith("multipart/"):
            continue  # registration takes multipart: tests/security/test_attack_artifacts
        r = post_raw(client, path, json.dumps(body), content_type)
        error = assert_refused(r, before, 415)
        assert error["code"] == "unsupported_media_type", (name, error)


@pytest.mark.parametrize("charset", ["no-such-charset", "utf-7", "utf-16", "latin-1"])
def test_odd_charsets_never_500(world, charset):
    for _name, client, path, _body in write_calls(world):
        before = database_state()
        r = post_raw(
            client, path, '{"a": "\\u0000", "a": 1', f"application/json; charset={charset}"
        )
        assert_refused(r, before)
