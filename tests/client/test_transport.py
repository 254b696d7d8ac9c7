"""The client's transport against a scripted upstream on a real socket: what is
retried (429, 5xx, dropped connections, truncated bodies), how long it waits
(exponential backoff with full jitter, Retry-After as a floor, both bounded), and what
is raised at once (any other 4xx, with the server's error body)."""

import json
import random
import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from reviewqueue_client import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    RetriesExhausted,
    RetryPolicy,
    ReviewQueueClient,
)
from reviewqueue_client.errors import IncompleteResponse
from reviewqueue_client.retry import parse_retry_after

from .upstream import Reply, Upstream

JSONL = {"Content-Type": "application/x-ndjson", "X-Next-Cursor": "7.2"}
LABELS = [{"cursor": "7.1", "label": "approve"}, {"cursor": "7.2", "label": "deny"}]
BODY = "".join(json.dumps(label) + "\n" for label in LABELS).encode()
POLICY = RetryPolicy(max_attempts=4, backoff_base=0.5, backoff_max=3.0, max_retry_after=60.0)


def error(status: int, code: str, message: str, **details) -> Reply:
    body = {"error": {"code": code, "message": message, "details": details}}
    return Reply(status, json.dumps(body).encode(), {"Content-Type": "application/json"})


def make_client(url: str, policy: RetryPolicy = POLICY):
    sleeps: list[float] = []
    client = ReviewQueueClient(
        url, "tok-1", retry=policy, sleep=sleeps.append, rng=random.Random(1), timeout=5
    )
    return client, sleeps


def test_5xx_answers_are_retried_with_bounded_jittered_backoff():
    # given an upstream that fails twice (a proxy's 502, then a 503) and then answers
    replies = [Reply(502, b"bad gateway"), Reply(503, b"busy"), Reply(200, BODY, JSONL)]
    with Upstream(replies) as upstream:
        client, sleeps = make_client(upstream.url)
        # when a page is asked for
        page = client.labels_page(after="7.0", limit=2, model="credit-default:3")
    # then the third try's labels come back, once
    assert page.labels == LABELS
    assert page.next_cursor == "7.2"
    assert len(upstream.seen) == 3
    # and every try sent the same request, with the token
    for seen in upstream.seen:
        assert seen.path == "/api/v1/labels/"
        assert seen.query == {
            "after": ["7.0"], "limit": ["2"], "model": ["credit-default:3"], "format": ["jsonl"]
        }  # fmt: skip
        assert seen.headers["Authorization"] == "Token tok-1"
    # and it waited twice, within the exponential ceilings 0.5 and 1.0
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.5
    assert 0 <= sleeps[1] <= 1.0


def test_429_waits_at_least_as_long_as_retry_after_says():
    # given a throttling upstream that asks for 7 seconds
    replies = [Reply(429, b"slow down", {"Retry-After": "7"}), Reply(200, BODY, JSONL)]
    with Upstream(replies) as upstream:
        client, sleeps = make_client(upstream.url)
        page = client.labels_page()
    # then the client waited 7 seconds plus at most the base jitter, then succeeded
    assert len(page) == 2
    assert len(sleeps) == 1
    assert 7.0 <= sleeps[0] <= 7.5


def test_a_retry_after_beyond_the_bound_gives_up_at_once():
    # given an upstream that asks for ten minutes, more than max_retry_after (60 s)
    with Upstream([Reply(429, b"", {"Retry-After": "600"})]) as upstream:
        client, sleeps = make_client(upstream.url)
        # then the client does not block for ten minutes: it raises after one request
        with pytest.raises(RetriesExhausted, match="asked to wait 600s") as caught:
            client.labels_page()
    assert caught.value.status == 429
    assert caught.value.attempts == 1
    assert len(upstream.seen) == 1
    assert sleeps == []


def test_persistent_5xx_stops_after_max_attempts():
    # given an upstream that always answers 500
    with Upstream([Reply(500, b"boom")]) as upstream:
        client, sleeps = make_client(upstream.url)
        with pytest.raises(RetriesExhausted) as caught:
            client.labels_page()
    # then it tried exactly max_attempts times and waited between tries only
    assert len(upstream.seen) == POLICY.max_attempts
    assert caught.value.attempts == POLICY.max_attempts
    assert caught.value.status == 500
    assert "boom" in str(caught.value)
    assert len(sleeps) == POLICY.max_attempts - 1
    # and no wait exceeded its exponential ceiling nor backoff_max
    for n, delay in enumerate(sleeps, start=1):
        assert 0 <= delay <= min(POLICY.backoff_max, POLICY.backoff_base * 2 ** (n - 1))


@pytest.mark.parametrize(
    ("reply", "exception", "code"),
    [
        (
            error(400, "invalid_cursor", "Bad cursor.", after="send back a cursor"),
            BadRequestError,
            "invalid_cursor",
        ),
        (error(401, "authentication_failed", "Invalid token."), AuthenticationError, None),
        (error(403, "permission_denied", "Needs pipeline."), PermissionDeniedError, None),
        (Reply(404, b"<html>not here</html>"), NotFoundError, "http_404"),
        (error(422, "unprocessable", "No."), ApiError, "unprocessable"),
    ],
)
def test_other_4xx_raise_at_once_with_the_servers_error(reply, exception, code):
    # given an upstream that refuses the request
    with Upstream([reply]) as upstream:
        client, sleeps = make_client(upstream.url)
        # then the refusal is raised after one request, with what the server said
        with pytest.raises(exception) as caught:
            client.labels_page(after="nonsense")
    assert len(upstream.seen) == 1
    assert sleeps == []
    err = caught.value
    assert err.status == reply.status
    assert err.method == "GET"
    assert "/api/v1/labels/" in err.url
    if reply.body.startswith(b"{"):
        sent = json.loads(reply.body)["error"]
        assert (err.code, err.message, err.details) == (
            sent["code"],
            sent["message"],
            sent["details"],
        )
        assert f"HTTP {reply.status} {sent['code']}: {sent['message']}" in str(err)
    else:
        assert err.code == code
        assert "not here" in err.message


def test_a_body_cut_mid_stream_is_fetched_again():
    # given an upstream that drops the connection half-way through the first answer
    replies = [Reply(200, BODY[:30], JSONL, cut=True), Reply(200, BODY, JSONL)]
    with Upstream(replies) as upstream:
        client, sleeps = make_client(upstream.url)
        page = client.labels_page()
    # then the page was fetched again and is whole: no half label was handed over
    assert page.labels == LABELS
    assert len(upstream.seen) == 2
    assert len(sleeps) == 1


@pytest.mark.parametrize(
    ("fmt", "partial"),
    [("jsonl", BODY[:-1]), ("csv", b"cursor,label\n7.1,app"), ("parquet", b"PAR1\x00\x01")],
)
def test_a_page_that_ends_mid_record_counts_as_truncated(fmt, partial):
    # given an upstream whose body is delimited by the connection and ends mid-record
    # (so that HTTP alone cannot tell it was cut)
    with Upstream([Reply(200, partial, {"X-Next-Cursor": "7.2"})]) as upstream:
        client, _ = make_client(upstream.url)
        # then every try is refused as incomplete, and the client gives up, bounded
        with pytest.raises(RetriesExhausted) as caught:
            client.labels_raw(format=fmt)
    assert isinstance(caught.value.last, IncompleteResponse)
    assert len(upstream.seen) == POLICY.max_attempts


def test_connection_refused_is_retried_then_reported():
    # given a port where nothing listens
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client, sleeps = make_client(f"http://127.0.0.1:{port}")
    # then the client tries max_attempts times and reports the connection error
    with pytest.raises(RetriesExhausted, match="gave up after 4 attempts") as caught:
        client.labels_page()
    assert caught.value.status is None
    assert "Connection" in type(caught.value.last).__name__
    assert len(sleeps) == POLICY.max_attempts - 1


def test_an_answer_without_a_next_cursor_breaks_the_contract():
    # given an upstream (a misconfigured proxy) that strips X-Next-Cursor
    with Upstream([Reply(200, BODY, {"Content-Type": "application/x-ndjson"})]) as upstream:
        client, _ = make_client(upstream.url)
        # then the client refuses to guess where to go next, without retrying
        with pytest.raises(ProtocolError, match="X-Next-Cursor"):
            client.labels_page()
    assert len(upstream.seen) == 1


def test_a_full_page_that_does_not_move_the_cursor_is_refused():
    # given an upstream that answers labels but hands back the cursor that was sent
    with Upstream([Reply(200, BODY, {"X-Next-Cursor": "7.0"})]) as upstream:
        client, _ = make_client(upstream.url)
        # then following it would loop forever: the client says so
        with pytest.raises(ProtocolError, match="did not move"):
            list(client.iter_labels(after="7.0"))


def test_retry_after_as_an_http_date():
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now=now) == 90.0
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=5), usegmt=True), now=now) == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_backoff_is_jittered_so_clients_do_not_return_together():
    # given two clients with different dice and the same policy
    delays = [
        [POLICY.delay(n, retry_after=None, rng=rng) for n in range(1, 6)]
        for rng in (random.Random(1), random.Random(2))
    ]
    # then their waits differ, and each stays under its ceiling
    assert delays[0] != delays[1]
    for series in delays:
        for n, delay in enumerate(series, start=1):
            assert 0 <= delay <= min(POLICY.backoff_max, POLICY.backoff_base * 2 ** (n - 1))
