"""Helpers that test modules of several packages share (builders of data are in
``tests.factories``): threads that each use their own connection, snapshots of the
review state and of the whole database to show that a refused call changed nothing, a
reader of whole label pages, a real HTTP receiver for webhooks and a receiver's
signature check, and the script payloads every page must show as text."""

import csv
import hashlib
import hmac
import io
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from django.db import connection

from apps.audit.models import AuditEvent
from apps.reviews.models import Decision, Escalation, ReviewItem

ROOT = Path(__file__).resolve().parents[1]


def manage_py(
    env: dict[str, str], *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``manage.py <args>`` in a process of its own, with exactly ``env``; its result
    (output captured as text), for a test of settings or of the embedded default."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# Every payload a page must show as text. Any that ran would set window.__xss.
XSS = [
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=2">',
    '<svg onload="window.__xss=3"></svg>',
    "javascript:window.__xss=4",
    '"><script>window.__xss=5</script>',
    "</title><script>window.__xss=6</script>",
    "{{ 7*7 }}<html>",
]


def run_in_threads(target: Callable[..., Any], args: list[tuple]) -> list[Any]:
    """Run ``target(*a)`` for each ``a`` in its own thread, each with its own database
    connection (closed at the thread's end); the results in order. Any exception in a
    thread fails the test."""
    results: list[Any] = [None] * len(args)
    errors: list[BaseException] = []

    def run(index: int, a: tuple) -> None:
        try:
            results[index] = target(*a)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(args)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    if errors:
        raise errors[0]
    return results


def review_state() -> dict[str, Any]:
    """What a refused call must leave alone: items by status and lease, decisions,
    escalations by status, and the audit trail (refusals may only add ``denied``)."""
    return {
        "items": sorted(
            ReviewItem.objects.values_list(
                "id",
                "status",
                "lease_token",
                "leased_by_id",
                "lease_expires_at",
                "lease_expiries",
                "sla_breached_at",
            )
        ),
        "item_statuses": Counter(ReviewItem.objects.values_list("status", flat=True)),
        "decisions": Decision.objects.count(),
        "escalations": sorted(
            Escalation.objects.values_list("id", "status", "claimed_by_id", "lease_token")
        ),
        "audit": list(AuditEvent.objects.exclude(action="denied").values_list("id", flat=True)),
    }


def database_state() -> dict[str, str]:
    """An md5 of every row of every table of this database, by table: what a refused
    call must leave as it was. Audit events of refusals (action ``denied``) and the
    session table are left out."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )
        tables = [t for (t,) in cursor.fetchall() if t != "django_session"]
        state = {}
        for table in tables:
            where = " WHERE action <> 'denied'" if table == "audit_auditevent" else ""
            cursor.execute(
                f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "  # noqa: S608
                f'FROM "{table}" t{where}'
            )
            state[table] = cursor.fetchone()[0]
    return state


def read_page(client, **params: Any) -> tuple[int, Any, str | None]:
    """GET /api/v1/labels/: (status, parsed body, X-Next-Cursor). JSONL and CSV parse to
    lists of dicts, Parquet to a pyarrow Table; error bodies to dicts."""
    import pyarrow.parquet as pq

    params = {k: v for k, v in params.items() if v is not None}
    response = client.get("/api/v1/labels/", params)
    if response.status_code != 200:
        return response.status_code, response.json(), None
    body = b"".join(response.streaming_content)
    fmt = params.get("format", "jsonl")
    if fmt == "jsonl":
        parsed: Any = [json.loads(line) for line in body.decode().splitlines()]
    elif fmt == "csv":
        parsed = list(csv.DictReader(io.StringIO(body.decode())))
    else:
        parsed = pq.read_table(io.BytesIO(body))
    return 200, parsed, response["X-Next-Cursor"]


# -- webhooks ----------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An http.server in a thread. ``statuses`` are answered in turn (then 200);
    ``redirect_to`` makes every answer a 307 to that URL; ``delay`` slows each answer."""

    host: str = "127.0.0.1"
    statuses: list[int] = field(default_factory=list)
    redirect_to: str | None = None
    delay: float = 0.0
    requests: list[Received] = field(default_factory=list)

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                receiver.requests.append(Received(self.path, dict(self.headers.items()), body))
                if receiver.delay:
                    time.sleep(receiver.delay)
                if receiver.redirect_to is not None:
                    self.send_response(307)
                    self.send_header("Location", receiver.redirect_to)
                else:
                    self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                """Quiet: the tests read ``receiver.requests``, not a request log."""

        self.server = ThreadingHTTPServer((self.host, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hooks/reviewqueue"


def verify(secret: str, request: Received) -> bool:
    """What a receiver does (docs/webhooks.md): recompute the HMAC of
    ``<timestamp>.<raw body>`` and compare in constant time."""
    timestamp = request.headers["X-Reviewqueue-Timestamp"]
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest("sha256=" + expected, request.headers["X-Reviewqueue-Signature"])
