"""The review screen's server time with 100,000 ready items in the queue.

A model with 30 features (2 of them sensitive) is registered, and 100,000 routed
predictions with ready, explained review items are made in SQL (the setup is not what
is measured). A reviewer logs in through the login form like a browser (session cookie,
CSRF token) and starts reviewing. Timed, one keep-alive connection on the loopback:

- ``GET /review/``, the case on screen with its waterfall chart, ``REQUESTS`` times;
- the decision cycle: ``POST /review/{id}/decide/`` (accept), which decides through the
  review service and claims the next case, then ``GET /review/`` for it.

Reported: p50 and p95 of each. Afterwards every decided item must have one decision.
"""

from __future__ import annotations

import http.client
import json
import re
import time
from urllib.parse import urlencode, urlsplit

import psycopg

from .harness import BenchFailure, Context, Http, Row, ready_items_insert

ITEMS = 100_000
REQUESTS = 300
CYCLES = 200
N_FEATURES = 30
PASSWORD = "bench-review-screen-password"  # noqa: S105 (a throwaway bench account)
QUEUE = "bench-review"
MODEL = {
    "name": "bench-review",
    "version": "1",
    "task": "binary_classification",
    "labels": ["approve", "deny"],
    "features": [
        {"name": f"feature_{i:02d}", "type": "numeric", "sensitive": i in (3, 7)}
        for i in range(N_FEATURES)
    ],
    "explainer": {
        "kind": "linear",
        "coef": [0.05 * ((-1) ** i) * (i + 1) / N_FEATURES for i in range(N_FEATURES)],
        "intercept": 0.1,
        "background_mean": [0.0] * N_FEATURES,
    },
    "routing": {"min_confidence": 0.99, "queue": QUEUE},
}


def _make_items(database_url: str, model_id: int, queue_id: int) -> None:
    """ITEMS routed predictions, each explained, with a ready review item, in SQL."""
    features = json.dumps({f"feature_{i:02d}": 0.5 + i for i in range(N_FEATURES)})
    contributions = json.dumps([0.01 * ((-1) ** i) * (i + 1) for i in range(N_FEATURES)])
    total = sum(0.01 * ((-1) ** i) * (i + 1) for i in range(N_FEATURES))
    with psycopg.connect(database_url) as conn:
        conn.execute(
            """
            INSERT INTO predictions_prediction
                (model_version_id, external_id, content_hash, features, context, label,
                 probabilities, routed, reasons, selection_probability, created_at)
            SELECT %s, 'screen-' || g, md5(g::text), %s::jsonb,
                   jsonb_build_object('amount', g, 'channel', 'web'), 'approve',
                   '{"approve": 0.6, "deny": 0.4}'::jsonb, true,
                   '["low_confidence"]'::jsonb, 1.0, now()
            FROM generate_series(1, %s) AS g
            """,
            [model_id, features, ITEMS],
        )
        conn.execute(
            """
            INSERT INTO explanations_explanation
                (prediction_id, method, output, base_value, model_output, contributions,
                 additivity_error, seconds, created_at)
            SELECT p.id, 'linear_shap', 'log_odds', 0.1, 0.1 + %s, %s::jsonb, 0, 0, now()
            FROM predictions_prediction p WHERE p.model_version_id = %s
            """,
            [total, contributions, model_id],
        )
        ready_items_insert(conn, model_id=model_id, queue_id=queue_id)
        conn.execute("ANALYZE")


class Browser:
    """A keep-alive HTTP connection that keeps cookies and posts forms, like a browser
    (without following redirects)."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict | None = None) -> tuple[int, str, str]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        text = response.read().decode()
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]
        return response.status, response.headers.get("Location", ""), text

    def csrf(self, html: str) -> str:
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
        if not match:
            raise BenchFailure("no CSRF token in the page")
        return match.group(1)

    def close(self) -> None:
        self.conn.close()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _review_page(browser: Browser) -> tuple[float, str]:
    began = time.perf_counter()
    status, _, html = browser.request("GET", "/review/")
    elapsed = time.perf_counter() - began
    if status != 200 or 'class="waterfall"' not in html or "feature_03" in html:
        raise BenchFailure(f"GET /review/ answered {status} without the case's waterfall")
    return elapsed, html


def bench_review_screen(ctx: Context) -> list[Row]:
    # The production settings serve hashed static files from a manifest: collect them
    # before the server renders its first page.
    ctx.manage("collectstatic", "--noinput", "-v0")
    admin = Http(ctx.server.base_url, ctx.admin_token)
    status, model = admin.json("POST", "/api/v1/models/", MODEL)
    admin.close()
    if status != 201:
        raise BenchFailure(f"model registration answered {status}: {model}")
    with psycopg.connect(ctx.database_url) as conn:
        (queue_id,) = conn.execute(
            "SELECT id FROM queues_queue WHERE name = %s", [QUEUE]
        ).fetchone()
    _make_items(ctx.database_url, model["id"], queue_id)
    account = ["bench-screen", "--role", "reviewer", "--queue", QUEUE, "--password", PASSWORD]
    ctx.manage("create_account", *account)

    browser = Browser(ctx.server.base_url)
    try:
        _, _, page = browser.request("GET", "/login/")
        credentials = {"username": "bench-screen", "password": PASSWORD}
        credentials["csrfmiddlewaretoken"] = browser.csrf(page)
        status, location, _ = browser.request("POST", "/login/", credentials)
        if status != 302 or "sessionid" not in browser.cookies:
            raise BenchFailure(f"login answered {status} to {location!r}")
        _, _, page = browser.request("GET", "/queues/")
        status, location, _ = browser.request(
            "POST", "/queues/start/", {"csrfmiddlewaretoken": browser.csrf(page), "queue": QUEUE}
        )
        if status != 302 or location != "/review/":
            raise BenchFailure(f"start answered {status} to {location!r}")

        for _ in range(10):  # warm every worker's caches a little
            _review_page(browser)
        screen = [_review_page(browser)[0] for _ in range(REQUESTS)]

        decide, _, html = [], None, _review_page(browser)[1]
        for _ in range(CYCLES):
            item_id = re.search(r'action="/review/(\d+)/decide/"', html).group(1)
            token = re.search(r'name="lease_token" value="([0-9a-f-]{36})"', html).group(1)
            form = {
                "csrfmiddlewaretoken": browser.csrf(html),
                "lease_token": token,
                "label": "approve",
            }
            began = time.perf_counter()
            status, location, _ = browser.request("POST", f"/review/{item_id}/decide/", form)
            if status != 302 or location != "/review/":
                raise BenchFailure(f"decide answered {status} to {location!r}")
            _, html = _review_page(browser)
            decide.append(time.perf_counter() - began)
    finally:
        browser.close()

    with psycopg.connect(ctx.database_url) as conn:
        decided, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT item_id) FROM reviews_decision d "
            "JOIN reviews_reviewitem i ON i.id = d.item_id WHERE i.queue_id = %s",
            [queue_id],
        ).fetchone()
    if decided != CYCLES or distinct != CYCLES:
        raise BenchFailure(f"{decided} decisions on {distinct} items after {CYCLES} cycles")

    note = f"{ITEMS:,} ready items; one keep-alive client on the loopback; {ctx.server.description}"
    ms = 1000
    return [
        Row("review screen GET p50", round(_percentile(screen, 0.5) * ms, 1), "ms", "", note),
        Row("review screen GET p95", round(_percentile(screen, 0.95) * ms, 1), "ms", "<= 50 ms"),
        Row(
            "decide + next case p50",
            round(_percentile(decide, 0.5) * ms, 1),
            "ms",
            "",
            "POST decide (decides, claims the next) then GET the new case",
        ),
        Row("decide + next case p95", round(_percentile(decide, 0.95) * ms, 1), "ms"),
    ]
