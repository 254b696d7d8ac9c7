"""A real HTTP receiver on loopback, and helpers to make subscriptions and events."""

import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from apps.webhooks import outbound
from apps.webhooks.models import WebhookSubscription
from apps.webhooks.services.subscriptions import webhook_subscription_create
from tests.conftest import make_client


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
                pass

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


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def public_loopback(monkeypatch):
    """Let 127.0.0.2 stand for a public receiver (no test may reach the internet);
    every other address keeps the real rules."""
    real = outbound.address_refusal

    def refusal(ip):
        return None if str(ip) == "127.0.0.2" else real(ip)

    monkeypatch.setattr(outbound, "address_refusal", refusal)
    public = Receiver(host="127.0.0.2").start()
    yield public
    public.stop()


@pytest.fixture
def allow_loopback(settings):
    """The loopback receiver is private: allow it (production refuses it, see
    test_address_guard and the refusal tests)."""
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = True
    return settings


def subscribe(url: str, *events: str) -> tuple[WebhookSubscription, str]:
    return webhook_subscription_create(
        name="downstream", url=url, events=list(events or ("prediction.decided",))
    )


def verify(secret: str, request: Received) -> bool:
    """What a receiver does (docs/webhooks.md): recompute the HMAC of
    ``<timestamp>.<raw body>`` and compare in constant time."""
    timestamp = request.headers["X-Reviewqueue-Timestamp"]
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest("sha256=" + expected, request.headers["X-Reviewqueue-Signature"])


@pytest.fixture
def reviewer(db):
    return make_client("rev-1", "reviewer")


@pytest.fixture
def decide(reviewer, django_capture_on_commit_callbacks):
    """Claim the next item and decide it through the API, running after-commit work."""

    def run(label: str = "approve", **extra) -> dict:
        item = reviewer.post("/api/v1/queue/claim/").json()
        body = {"lease_token": item["lease"]["token"], "label": label, **extra}
        with django_capture_on_commit_callbacks(execute=True):
            r = reviewer.post(f"/api/v1/reviews/{item['id']}/decide/", body, format="json")
        assert r.status_code == 200, r.content
        return item

    return run
