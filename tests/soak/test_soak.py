"""A mixed-load soak against the real stack, with faults (``make soak``; not in ``make test``).

gunicorn (4 workers), two Celery workers, celery beat, PostgreSQL and a Redis of the
test's own. For ``SOAK_SECONDS`` (default 180), over HTTP only:

- producers send predictions, single and bulk, a good share of them routed;
- 32 reviewers claim, sometimes heartbeat, decide (accept, or override with a reason
  code), escalate some and release some;
- 2 escalation managers list open escalations, claim them, resolve most, return some;
- a pipeline follows the label feed by ``X-Next-Cursor``, and exports are requested.

Faults at fixed fractions of the run: a Celery worker is killed (SIGKILL) and a
replacement started later, a gunicorn worker is killed (the master starts another),
Redis is stopped for a few seconds and started again empty (queued messages are lost;
the sweepers must recover them).

Then producers stop, reviewers and managers drain the queue, and the pipeline catches
up. The test asserts: every routed prediction ends decided, none lost; the feed gave
each label exactly once, exactly the human decisions in the database; the audit chain
verifies; every export finishes; no 5xx except during the Redis outage, and then only
on endpoints that need the broker; intake answered 2xx throughout, the outage included.
Only requests cut by the gunicorn worker's death may fail to get an answer.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
import psycopg
import pytest
import requests

from apps.operations.management.commands.demo_setup import model_spec, model_train
from tests.workers import wait_until

from .stack import Stack, soak_database_url

pytestmark = pytest.mark.soak

SECONDS = float(os.environ.get("SOAK_SECONDS", "180"))
# Predictions per second, all producers together.
RATE = float(os.environ.get("SOAK_RATE", "10"))
PRODUCERS = 2
REVIEWERS = 32
MANAGERS = 2
# How long the queue may take to drain once the producers stop (the sweepers run every
# 15 to 60 s and may have lost work to recover).
DRAIN_SECONDS = float(os.environ.get("SOAK_DRAIN_SECONDS", "300"))
REDIS_DOWN_SECONDS = 8.0

MODEL = "soak-bc:1"
OVERRIDE_CODE = "soak_override"
ESCALATION_REASON = "second_opinion"
# "referral" trips a risk rule: with low confidence and the audit sample, about four
# predictions in ten wait for a person.
ROUTING = {
    "min_confidence": 0.9,
    "risk_rules": [
        {"field": "context.channel", "op": "==", "value": "referral", "reason": "referral"},
    ],
    "audit_rate": 0.05,
    "sla": {"default": "PT4H"},
    "queue": "default",
}
CHANNELS = ("clinic", "screening", "referral")
CHANNEL_WEIGHTS = (0.45, 0.25, 0.30)

INTAKE = "POST /api/v1/predictions/"
# The endpoints that need the broker to do their work. Even they should not fail (the
# app records the work and a sweeper sends it later), but a 5xx from them while Redis
# is down is tolerated; anywhere else it is a failure.
BROKER_ENDPOINTS = {"POST /api/v1/exports/", "GET /healthz"}


# -- what happened -------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    start: float  # seconds since the soak began
    seconds: float
    endpoint: str  # "POST /api/v1/reviews/{id}/decide/"
    status: int  # 0: no answer (connection refused, reset or timed out)
    error: str = ""


@dataclass
class Recorder:
    """Every request's time, endpoint and status; the faults' timeline."""

    t0: float = field(default_factory=time.monotonic)
    calls: list[Call] = field(default_factory=list)
    faults: list[tuple[float, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def fault(self, text: str) -> float:
        at = self.now()
        self.faults.append((at, text))
        print(f"  [{at:6.1f} s] {text}", flush=True)
        return at

    def problem(self, text: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(f"[{self.now():6.1f} s] {text}")


class Client:
    """One account's keep-alive session (one per thread); every call is recorded."""

    def __init__(self, recorder: Recorder, base_url: str, token: str) -> None:
        self.recorder = recorder
        self.base_url = base_url
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Token {token}"

    def call(
        self, method: str, path: str, endpoint: str | None = None, **kwargs
    ) -> requests.Response | None:
        """The answer, or None when none came; ``endpoint`` names ``path`` in the table."""
        name = f"{method} {endpoint or path}"
        start = self.recorder.now()
        try:
            response = self.session.request(method, self.base_url + path, timeout=30, **kwargs)
        except requests.RequestException as exc:
            self.recorder.calls.append(
                Call(start, self.recorder.now() - start, name, 0, type(exc).__name__)
            )
            return None
        self.recorder.calls.append(
            Call(start, self.recorder.now() - start, name, response.status_code)
        )
        return response

    def close(self) -> None:
        self.session.close()


# -- the actors ----------------------------------------------------------------------


@dataclass
class Intake:
    """What the producers were told: every prediction's answer."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    answers: dict[str, dict] = field(default_factory=dict)  # external_id -> answer
    sent: int = 0

    def record(self, answers: list[dict]) -> None:
        with self.lock:
            for answer in answers:
                self.answers[answer["external_id"]] = answer

    @property
    def routed(self) -> dict[int, int]:
        """prediction id -> review item id, of the routed predictions."""
        return {a["id"]: a["review_item"] for a in self.answers.values() if a["routed"]}

    def routed_by(self, producer: int) -> list[int]:
        """The routed predictions of one producer (external ids ``p<producer>-<n>``)."""
        return [
            a["id"]
            for external_id, a in self.answers.items()
            if a["routed"] and external_id.startswith(f"p{producer}-")
        ]


class Predictions:
    """Predictions as a model server sends them: rows of the breast-cancer data with the
    model's own probabilities, external ids ``<prefix><n>``."""

    def __init__(self, trained, prefix: str, seed: int) -> None:
        self.trained = trained
        self.prefix = prefix
        self.rng = random.Random(seed)
        self.numbers = itertools.count()

    def __call__(self, channel: str | None = None) -> dict:
        trained, rng = self.trained, self.rng
        negative, positive = trained.labels
        row = rng.randrange(len(trained.rows))
        p = float(trained.positive[row])
        return {
            "model": MODEL,
            "external_id": f"{self.prefix}{next(self.numbers)}",
            "features": dict(
                zip(trained.feature_names, map(float, trained.rows[row]), strict=True)
            ),
            "prediction": {
                "label": positive if p > 0.5 else negative,
                "probabilities": {negative: 1.0 - p, positive: p},
            },
            "context": {"channel": channel or rng.choices(CHANNELS, CHANNEL_WEIGHTS)[0]},
        }


def send(client: Client, batch: list[dict], intake: Intake, recorder: Recorder, *, bulk: bool):
    """Send predictions and record the answers. The same body goes again until it is
    answered (the intake is idempotent by external_id): a request cut by a dying web
    worker loses nothing."""
    body = {"items": batch} if bulk else batch[0]
    for attempt in range(20):
        response = client.call("POST", "/api/v1/predictions/", json=body)
        if response is not None and response.status_code < 500:
            break
        time.sleep(0.5 * (attempt + 1))
    else:
        recorder.problem(f"intake never answered for {batch[0]['external_id']}")
        return
    if response.status_code not in (200, 201):
        recorder.problem(f"intake answered {response.status_code}: {response.text[:200]}")
        return
    answer = response.json()
    if bulk:
        if answer["errors"]:
            recorder.problem(f"bulk intake refused items: {json.dumps(answer)[:300]}")
        intake.record([r for r in answer["results"] if "error" not in r])
    else:
        intake.record([answer])
    with intake.lock:
        intake.sent += len(batch)


def producer(n, client, trained, intake: Intake, recorder: Recorder, stop: threading.Event):
    """Singles and bulks at RATE / PRODUCERS predictions per second."""
    rng = random.Random(n)
    prediction = Predictions(trained, f"p{n}-", n)
    rate = RATE / PRODUCERS
    began, sent = time.monotonic(), 0
    while not stop.is_set():
        bulk = rng.random() >= 0.75
        batch = [prediction() for _ in range(rng.randint(5, 25) if bulk else 1)]
        send(client, batch, intake, recorder, bulk=bulk)
        sent += len(batch)
        pause = began + sent / rate - time.monotonic()
        if pause > 0:
            stop.wait(pause)


def _expect(recorder: Recorder, response, action: str, *, race: bool = False) -> bool:
    """Whether ``response`` is a 200. Anything else but no answer or a 5xx (both judged
    later, by time) is a problem; so is a 409, unless ``race``: two managers may claim
    the same escalation. A reviewer's lease (30 s) outlives their thinking, and nothing
    else moves their item meanwhile, so their writes never conflict."""
    if response is None:
        return False
    if response.status_code == 200:
        return True
    if response.status_code < 500 and not (race and response.status_code == 409):
        recorder.problem(f"{action} answered {response.status_code}: {response.text[:200]}")
    return False


def reviewer(n, client, recorder: Recorder, stop: threading.Event):
    rng = random.Random(1000 + n)
    while not stop.is_set():
        response = client.call("POST", "/api/v1/queue/claim/", json={})
        if response is None or response.status_code != 200:
            if response is not None and response.status_code != 204:
                _expect(recorder, response, "claim")
            stop.wait(rng.uniform(0.5, 1.5))
            continue
        item = response.json()
        item_id, token = item["id"], item["lease"]["token"]
        path = f"/api/v1/reviews/{item_id}/"
        if item["explanation_status"] != "ready" or not item["explanation"]:
            recorder.problem(f"item {item_id} handed out without its explanation")
        time.sleep(rng.uniform(0.2, 1.0))
        if rng.random() < 0.2:
            heartbeat = client.call(
                "POST",
                path + "heartbeat/",
                "/api/v1/reviews/{id}/heartbeat/",
                json={"lease_token": token},
            )
            _expect(recorder, heartbeat, "heartbeat")
            time.sleep(rng.uniform(0.1, 0.5))
        choice = rng.random()
        if choice < 0.07:
            action, body = "release", {"lease_token": token}
        elif choice < 0.17:
            action = "escalate"
            body = {"lease_token": token, "reason": ESCALATION_REASON, "comment": "unsure"}
        else:
            action = "decide"
            model_label = item["prediction"]["prediction"]["label"]
            if rng.random() < 0.8:
                body = {"lease_token": token, "label": model_label}
            else:
                other = [k for k in item["prediction"]["prediction"]["probabilities"]]
                other.remove(model_label)
                body = {
                    "lease_token": token,
                    "label": other[0],
                    "reason_code": OVERRIDE_CODE,
                    "comment": "looks wrong",
                }
        answer = client.call(
            "POST", f"{path}{action}/", f"/api/v1/reviews/{{id}}/{action}/", json=body
        )
        _expect(recorder, answer, action)


def manager(n, client, labels, recorder: Recorder, stop: threading.Event):
    rng = random.Random(2000 + n)
    while not stop.is_set():
        response = client.call("GET", "/api/v1/escalations/", params={"status": "open"})
        if not _expect(recorder, response, "escalation list") or not response.json()["results"]:
            stop.wait(rng.uniform(0.5, 1.5))
            continue
        escalations = response.json()["results"]
        rng.shuffle(escalations)
        for escalation in escalations[:5]:
            if stop.is_set():
                return
            path = f"/api/v1/escalations/{escalation['id']}/"
            claim = client.call("POST", path + "claim/", "/api/v1/escalations/{id}/claim/")
            if not _expect(recorder, claim, "escalation claim", race=True):
                continue  # the other manager took it
            token = claim.json()["lease"]["token"]
            time.sleep(rng.uniform(0.2, 1.0))
            if rng.random() < 0.85:
                body = {"label": rng.choice(labels), "comment": "resolved", "lease_token": token}
                action = "resolve"
            else:
                body = {"comment": "back to the queue", "lease_token": token}
                action = "return"
            answer = client.call(
                "POST", path + f"{action}/", f"/api/v1/escalations/{{id}}/{action}/", json=body
            )
            _expect(recorder, answer, f"escalation {action}")


class Pipeline:
    """Follows the label feed by ``X-Next-Cursor``, remembering every label once seen."""

    def __init__(self, client: Client, recorder: Recorder) -> None:
        self.client = client
        self.recorder = recorder
        self.cursor: str | None = None
        self.seen: list[tuple[int, str]] = []  # (prediction_id, cursor)

    def page(self) -> int:
        """Fetch the next page; how many labels it held (-1: no page)."""
        params = {"limit": 200, **({"after": self.cursor} if self.cursor else {})}
        response = self.client.call("GET", "/api/v1/labels/", params=params)
        if not _expect(self.recorder, response, "labels"):
            return -1
        labels = [json.loads(line) for line in response.text.splitlines() if line.strip()]
        self.seen.extend((label["prediction_id"], label["cursor"]) for label in labels)
        self.cursor = response.headers["X-Next-Cursor"]
        return len(labels)

    def follow(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if self.page() <= 0:
                stop.wait(1.0)

    def catch_up(self, expected: int, deadline: float) -> None:
        """Read until ``expected`` labels were seen and a page came back empty."""
        while time.monotonic() < deadline:
            n = self.page()
            if n == 0 and len(self.seen) >= expected:
                return
            if n <= 0:
                time.sleep(1.0)


# -- the database, for the checks ----------------------------------------------------


def db_rows(database_url: str, query: str, params=()) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query, params).fetchall()


def undecided_items(database_url: str) -> int:
    ((n,),) = db_rows(
        database_url, "SELECT count(*) FROM reviews_reviewitem WHERE status <> 'decided'"
    )
    return n


# -- the summary ---------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def summary(recorder: Recorder, figures: dict[str, object]) -> str:
    by_endpoint: dict[str, list[Call]] = defaultdict(list)
    for call in recorder.calls:
        by_endpoint[call.endpoint].append(call)
    rows = [("endpoint", "requests", "statuses", "p50 ms", "p99 ms")]
    for endpoint in sorted(by_endpoint):
        calls = by_endpoint[endpoint]
        statuses = Counter(c.status for c in calls)
        seconds = [c.seconds * 1000 for c in calls if c.status]
        rows.append(
            (
                endpoint,
                str(len(calls)),
                " ".join(f"{s or 'none'}:{statuses[s]}" for s in sorted(statuses)),
                f"{percentile(seconds, 50):.0f}",
                f"{percentile(seconds, 99):.0f}",
            )
        )
    all_seconds = [c.seconds * 1000 for c in recorder.calls if c.status]
    all_statuses = Counter(c.status for c in recorder.calls)
    rows.append(
        (
            "all",
            str(len(recorder.calls)),
            " ".join(f"{s or 'none'}:{all_statuses[s]}" for s in sorted(all_statuses)),
            f"{percentile(all_seconds, 50):.0f}",
            f"{percentile(all_seconds, 99):.0f}",
        )
    )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [
        "  ".join(
            cell.rjust(widths[i]) if i in (1, 3, 4) else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append("faults:")
    lines.extend(f"  {at:7.1f} s  {text}" for at, text in recorder.faults)
    lines.append("")
    width = max(len(k) for k in figures)
    lines.extend(f"{k.ljust(width)}  {v}" for k, v in figures.items())
    return "\n".join(lines)


# -- the test ------------------------------------------------------------------------


def run_threads(targets) -> list[threading.Thread]:
    threads = [threading.Thread(target=t, args=a, daemon=True) for t, a in targets]
    for thread in threads:
        thread.start()
    return threads


def monitor(client: Client, states: Counter, stop: threading.Event) -> None:
    """Polls /healthz (no credentials) every 2 s; counts the broker states it reports."""
    while not stop.is_set():
        response = client.call("GET", "/healthz")
        if response is not None and response.status_code == 200:
            states[response.json()["broker"]] += 1
        stop.wait(2.0)


def test_mixed_load_with_faults():
    stack = Stack(database_url=soak_database_url())
    produce_stop, work_stop, feed_stop = threading.Event(), threading.Event(), threading.Event()
    passed = False
    try:
        print(f"\nsoak: {SECONDS:.0f} s of load, logs in {stack.dir}", flush=True)
        stack.start()
        trained = model_train()
        usernames = {
            "soak-admin": "admin",
            "soak-pipeline": "pipeline",
            **{f"soak-producer-{i}": "producer" for i in range(PRODUCERS)},
            **{f"soak-manager-{i}": "escalation_manager" for i in range(MANAGERS)},
            **{f"soak-reviewer-{i:02d}": "reviewer" for i in range(REVIEWERS)},
        }
        tokens = stack.accounts(usernames)
        stack.manage(
            "shell",
            "-c",
            "from apps.registry.models import ReasonCode; "
            f"ReasonCode.objects.get_or_create(model_name='soak-bc', code='{OVERRIDE_CODE}')",
        )
        admin = requests.post(
            stack.base_url + "/api/v1/models/",
            json={**model_spec(trained), "name": "soak-bc", "version": "1", "routing": ROUTING},
            headers={"Authorization": f"Token {tokens['soak-admin']}"},
            timeout=60,
        )
        assert admin.status_code == 201, admin.text

        recorder = Recorder()
        intake = Intake()
        broker_states: Counter = Counter()

        def client(name: str) -> Client:
            return Client(recorder, stack.base_url, tokens[name])

        pipeline = Pipeline(client("soak-pipeline"), recorder)
        exporter = client("soak-pipeline")
        exports: list[str] = []

        def export(note: str) -> None:
            response = exporter.call("POST", "/api/v1/exports/", json={"format": "jsonl"})
            if response is not None and response.status_code == 202:
                exports.append(response.json()["id"])
                recorder.fault(f"export requested ({note}): 202")
            else:
                status = response.status_code if response is not None else "no answer"
                recorder.fault(f"export requested ({note}): {status}")

        producers = run_threads(
            (producer, (i, client(f"soak-producer-{i}"), trained, intake, recorder, produce_stop))
            for i in range(PRODUCERS)
        )
        workers = run_threads(
            [
                *(
                    (reviewer, (i, client(f"soak-reviewer-{i:02d}"), recorder, work_stop))
                    for i in range(REVIEWERS)
                ),
                *(
                    (manager, (i, client(f"soak-manager-{i}"), trained.labels, recorder, work_stop))
                    for i in range(MANAGERS)
                ),
            ]
        )
        feed = run_threads(
            [
                (pipeline.follow, (feed_stop,)),
                (monitor, (Client(recorder, stack.base_url, ""), broker_states, feed_stop)),
            ]
        )

        # The faults, at fixed fractions of the run.
        def at(fraction: float) -> None:
            pause = fraction * SECONDS - recorder.now()
            if pause > 0:
                time.sleep(pause)

        at(0.15)
        export("under load")
        # A burst of routed work just before each broker-side fault, so that there is
        # work in flight (messages delivered, not yet acknowledged) when it strikes.
        burst_client = client("soak-producer-0")
        burst_prediction = Predictions(trained, "p0-burst-", 99)

        def burst(requests: int, note: str) -> None:
            for _ in range(requests):
                batch = [burst_prediction("referral") for _ in range(50)]
                send(burst_client, batch, intake, recorder, bulk=True)
            recorder.fault(f"burst of {requests} x 50 routed predictions ({note})")

        at(0.20)
        burst(2, "before the worker kill")
        backlog = stack.broker_backlog()
        recorder.fault(f"celery worker {stack.worker_kill(0)} killed (SIGKILL; broker: {backlog})")
        at(0.30)
        stack.workers.append(stack.worker_start())
        recorder.fault(f"replacement celery worker {stack.workers[-1].pid} started")
        at(0.40)
        kill_began = recorder.now()
        killed = stack.gunicorn_worker_kill()
        gunicorn_killed = (kill_began, recorder.fault(f"gunicorn worker {killed} killed (SIGKILL)"))
        respawned = wait_until(
            lambda: (
                killed not in (pids := stack.gunicorn_worker_pids())
                and len(pids) == stack.gunicorn_workers
            )
        )
        recorder.fault(
            "gunicorn master has its workers again" if respawned else "gunicorn did not respawn"
        )
        at(0.60)
        burst(6, "before the redis stop")
        backlog = stack.broker_backlog()
        redis_down_at = recorder.now()
        stack.redis_stop()
        recorder.fault(f"redis stopped (it held {backlog})")
        time.sleep(2)
        export("redis down")
        time.sleep(REDIS_DOWN_SECONDS - 2)
        stack.redis_start()
        redis_up_at = recorder.now()
        recorder.fault("redis started again (empty)")
        at(1.0)

        produce_stop.set()
        for thread in producers:
            thread.join(timeout=120)
        recorder.fault("producers stopped; draining")
        drained = wait_until(lambda: undecided_items(stack.database_url) == 0, DRAIN_SECONDS, 1.0)
        recorder.fault("queue drained" if drained else "queue NOT drained")
        work_stop.set()
        for thread in workers:
            thread.join(timeout=60)
        feed_stop.set()
        for thread in feed:
            thread.join(timeout=60)

        database_url = stack.database_url
        decisions = dict(
            db_rows(
                database_url,
                "SELECT i.prediction_id, d.source FROM reviews_decision d "
                "JOIN reviews_reviewitem i ON i.id = d.item_id",
            )
        )
        pipeline.catch_up(len(decisions), time.monotonic() + 60)
        recorder.fault(f"pipeline caught up: {len(pipeline.seen)} labels")
        export_states = _exports_finish(exporter, exports, time.monotonic() + 120)
        recorder.fault(f"exports: {export_states}")
        audit = stack.manage("audit_verify").strip()

        # -- the checks -------------------------------------------------------------
        routed = intake.routed
        items = dict(db_rows(database_url, "SELECT prediction_id, status FROM reviews_reviewitem"))
        # A producer reads the status of its own predictions.
        api_status = {}
        for i in range(PRODUCERS):
            api_status.update(
                _prediction_statuses(
                    stack.base_url, tokens[f"soak-producer-{i}"], intake.routed_by(i), recorder
                )
            )
        escalations = Counter(
            dict(
                db_rows(database_url, "SELECT status, count(*) FROM reviews_escalation GROUP BY 1")
            )
        )
        seen_ids = [pid for pid, _ in pipeline.seen]
        figures = {
            "load seconds": f"{SECONDS:.0f}",
            "predictions sent": intake.sent,
            "predictions answered": len(intake.answers),
            "routed": len(routed),
            "decided (reviewer)": sum(1 for s in decisions.values() if s == "reviewer"),
            "decided (escalation)": sum(1 for s in decisions.values() if s == "escalation"),
            "escalations": dict(escalations),
            "labels delivered": len(seen_ids),
            "distinct labels": len(set(seen_ids)),
            "exports": export_states,
            "audit": audit,
            "intake answered while redis was down": sum(
                1
                for c in recorder.calls
                if c.endpoint == INTAKE and redis_down_at <= c.start <= redis_up_at
            ),
            "requests without an answer": sum(1 for c in recorder.calls if c.status == 0),
            "broker states seen by /healthz": dict(broker_states),
            "error lines in the logs": stack.log_errors(),
            "client problems": len(recorder.problems),
        }
        print("\n" + summary(recorder, figures), flush=True)
        for problem in recorder.problems:
            print("  problem:", problem)

        problems = list(recorder.problems)
        assert not problems, "\n".join(problems[:10])
        assert respawned, "gunicorn did not replace its killed worker"
        assert drained, f"{undecided_items(database_url)} items still undecided"
        assert routed, "nothing was routed"
        # None lost: the routed predictions are exactly those with a review item, and
        # every one of them is decided, in the database and through the API.
        assert set(items) == set(routed)
        assert {s for s in items.values()} == {"decided"}
        assert set(decisions) == set(routed)
        assert Counter(api_status.values()) == Counter({"decided": len(routed)}), Counter(
            api_status.values()
        )
        # The feed: every label once, exactly the human decisions.
        assert len(seen_ids) == len(set(seen_ids)), "a label was delivered twice"
        assert set(seen_ids) == set(decisions)
        assert audit.startswith("audit chain verified")
        assert exports and all(s == "done" for s in export_states.values()), export_states
        # /healthz told the outage: the broker unavailable while Redis was down.
        assert broker_states["ok"] and broker_states["unavailable"], broker_states

        _assert_answers(recorder, gunicorn_killed, (redis_down_at, redis_up_at))
        passed = True
    finally:
        for event in (produce_stop, work_stop, feed_stop):
            event.set()
        if not passed:
            print(stack.log_tails())
        stack.stop()
        if passed:
            stack.cleanup()


def _exports_finish(client: Client, ids: list[str], deadline: float) -> dict[str, str]:
    """Each export's last status, polling until all are done or failed."""
    states = dict.fromkeys(ids, "?")
    while time.monotonic() < deadline:
        for export_id in ids:
            if states[export_id] in ("done", "failed"):
                continue
            response = client.call("GET", f"/api/v1/exports/{export_id}/", "/api/v1/exports/{id}/")
            if response is not None and response.status_code == 200:
                states[export_id] = response.json()["status"]
        if all(s in ("done", "failed") for s in states.values()):
            break
        time.sleep(2)
    return states


def _prediction_statuses(base_url, token, ids, recorder) -> dict[int, str]:
    """Each prediction's contract status, read through the API (8 at a time)."""
    results: dict[int, str] = {}

    def read(chunk):
        client = Client(recorder, base_url, token)
        for prediction_id in chunk:
            response = client.call(
                "GET", f"/api/v1/predictions/{prediction_id}/", "/api/v1/predictions/{id}/"
            )
            if response is None or response.status_code != 200:
                status = response.status_code if response is not None else "none"
                results[prediction_id] = f"http {status}"
                continue
            body = response.json()
            final = body.get("final") or {}
            ok = body["status"] == "decided" and final.get("source") in ("reviewer", "escalation")
            results[prediction_id] = body["status"] if ok else f"{body['status']} {final}"
        client.close()

    threads = run_threads((read, (ids[i::8],)) for i in range(8))
    for thread in threads:
        thread.join()
    return results


def _assert_answers(recorder: Recorder, gunicorn_killed, redis_down) -> None:
    """No 5xx outside the Redis outage, and inside it only on broker endpoints; no
    request without an answer except those cut by the gunicorn worker's death; intake
    answered 2xx throughout, while Redis was down too."""
    down_from, down_to = redis_down[0], redis_down[1] + 5.0  # reconnecting takes a moment

    def during_outage(call: Call) -> bool:
        return call.start + call.seconds >= down_from and call.start <= down_to

    server_errors = [c for c in recorder.calls if c.status >= 500]
    misplaced = [
        c for c in server_errors if not (during_outage(c) and c.endpoint in BROKER_ENDPOINTS)
    ]
    assert not misplaced, misplaced[:10]

    unanswered = [c for c in recorder.calls if c.status == 0]
    # In flight when the worker died: begun before the kill ended, ended after it began.
    killed_from, killed_to = gunicorn_killed
    cut = [c for c in unanswered if c.start <= killed_to and c.start + c.seconds >= killed_from]
    assert len(cut) <= 2, cut  # a sync worker serves one request at a time
    assert unanswered == cut, [c for c in unanswered if c not in cut][:10]

    intake = [c for c in recorder.calls if c.endpoint == INTAKE]
    assert all(200 <= c.status < 300 for c in intake if c not in cut), Counter(
        c.status for c in intake
    )
    during = [c for c in intake if redis_down[0] <= c.start <= redis_down[1]]
    assert during and all(c.status in (200, 201) for c in during), during[:5]
