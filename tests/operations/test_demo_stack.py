"""``make demo``'s stack for real: the launcher's gunicorn, Celery worker and celery beat on
the embedded default (SQLite and kombu's filesystem broker, both in a temporary
directory). The rest of the suite runs tasks in-process; here a worker does them."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from apps.operations.management.commands.demo_setup import REASON_CODES
from reviewqueue.launcher import ROOT, Supervisor, demo_environment, free_port
from tests.helpers import manage_py

pytestmark = pytest.mark.slow

# The demo's own beat schedule, with its SLA check every few seconds instead of 30.
SLA_CHECK_SECONDS = 3
# What a busy machine may add to a period: the beat's tick, the broker's polling, the task.
SLACK_SECONDS = 15

BACKDATE = """
from datetime import timedelta
from django.utils import timezone
from apps.reviews.models import ItemStatus, ReviewItem
item = ReviewItem.objects.filter(status=ItemStatus.READY, sla_breached_at__isnull=True).first()
ReviewItem.objects.filter(id=item.id).update(due_at=timezone.now() - timedelta(seconds=1))
print("item", item.id)
"""


def demo_env(tmp_path: Path) -> dict[str, str]:
    """What ``make demo`` runs with, its database and broker in ``tmp_path``."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "CELERY_")) and k != "DATABASE_URL"
    }
    env = demo_environment(base)
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'demo.sqlite3'}",
        REVIEW_DEMO_DIR=str(tmp_path / "demo"),
        REVIEW_SLA_CHECK_SECONDS=str(SLA_CHECK_SECONDS),
    )
    return env


def manage(env: dict[str, str], *args: str) -> str:
    done = manage_py(env, *args, timeout=300)
    assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-3000:])
    return done.stdout


def poll(what: str, check, *, seconds: float, log: Path):
    """``check()`` until it returns something truthy; fails after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.25)
    pytest.fail(f"{what} within {seconds:g}s; the stack's log:\n{log.read_text()[-4000:]}")


class Api:
    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def post(self, path: str, body: dict | None = None) -> requests.Response:
        return self.session.post(f"{self.base_url}{path}", json=body, timeout=30)

    def get(self, path: str) -> requests.Response:
        return self.session.get(f"{self.base_url}{path}", timeout=30)


def test_the_demo_stack_escalates_by_its_own_beat_and_overrides_with_a_demo_reason(tmp_path):
    # given the demo set up as make demo sets it up: SQLite, the filesystem broker
    env = demo_env(tmp_path)
    assert env["CELERY_BROKER_URL"].startswith("filesystem://")
    manage(env, "migrate", "--noinput")
    port = free_port()
    setup = manage(env, "demo_setup", f"--url=http://127.0.0.1:{port}/")
    tokens = {
        line.split()[0]: line.split()[-1] for line in setup.splitlines() if line.startswith("demo-")
    }
    # and the accounts printed last, with where to log in
    assert f"log in at http://127.0.0.1:{port}/login/" in setup
    assert setup.rindex("demo-reviewer") > setup.rindex("routed to review")

    # when the launcher serves it: gunicorn, a Celery worker and celery beat
    log = tmp_path / "stack.log"
    with log.open("wb") as output:
        launcher = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "reviewqueue.launcher",
                "demo",
                "--no-setup",
                f"--bind=127.0.0.1:{port}",
            ],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    pids: list[int] = []
    try:
        started = poll(
            "the launcher started its processes",
            lambda: re.search(r"launcher: started (.*); Ctrl-C", log.read_text()),
            seconds=30,
            log=log,
        )
        pids = [int(part.split()[-1]) for part in started[1].split(", ")]
        assert len(pids) == 3

        def health():
            try:
                r = requests.get(f"{base}/healthz", timeout=10)
            except requests.ConnectionError:
                return None
            return r.status_code == 200 and r.json()

        assert poll("gunicorn answered", health, seconds=60, log=log) == {
            "database": "ok",
            "broker": "ok",
        }

        # then a reviewer gets an item once the worker has explained it (the explanations
        # queue is consumed), and overrides its label with one of the demo's reason codes
        reviewer = Api(base, tokens["demo-reviewer"])

        def claimed():
            r = reviewer.post("/api/v1/queue/claim/", {"queue": "default"})
            assert r.status_code in (200, 204), r.text
            return r.json() if r.status_code == 200 else None

        item = poll("an item was explained and claimed", claimed, seconds=60, log=log)
        assert item["explanation_status"] == "ready", item
        model_says = item["prediction"]["prediction"]
        other = next(label for label in model_says["probabilities"] if label != model_says["label"])
        code = REASON_CODES[0][0]
        r = reviewer.post(
            f"/api/v1/reviews/{item['id']}/decide/",
            {"lease_token": item["lease"]["token"], "label": other, "reason_code": code},
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "decided"
        producer = Api(base, tokens["demo-producer"])
        decided = producer.get(f"/api/v1/predictions/{item['prediction']['id']}/").json()
        assert decided["final"]["label"] == other
        assert decided["final"]["source"] == "reviewer"

        # and an item whose SLA has passed is escalated (sla_breach) by the beat's schedule
        # within one period of the SLA check, give or take a busy machine
        late = int(manage(env, "shell", "-c", BACKDATE).split()[-1])
        backdated_at = time.monotonic()
        manager = Api(base, tokens["demo-manager"])

        def escalated():
            page = manager.get("/api/v1/escalations/?status=open").json()
            return [e for e in page["results"] if e["item"] == late]

        (escalation,) = poll(
            "the late item was escalated",
            escalated,
            seconds=SLA_CHECK_SECONDS + SLACK_SECONDS,
            log=log,
        )
        assert escalation["reason"] == "sla_breach"
        assert escalation["raised_by"] is None
        assert time.monotonic() - backdated_at <= SLA_CHECK_SECONDS + SLACK_SECONDS
        # (by the worker: the beat only sends the task, gunicorn never runs it)
        assert "reviews.escalate_sla_breaches" in log.read_text()

        # when Ctrl-C reaches the launcher
        launcher.send_signal(signal.SIGINT)
        # then it stops all three and exits cleanly
        assert launcher.wait(timeout=60) == 0
        assert "launcher: every process has exited" in log.read_text()
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def test_when_one_process_dies_the_launcher_stops_the_others():
    # given a supervisor of a process that lives long and one that exits with code 3
    lines: list[str] = []
    supervisor = Supervisor(dict(os.environ), write=lines.append)
    commands = {
        "sleeper": [sys.executable, "-c", "import time; time.sleep(120)"],
        "quitter": [sys.executable, "-c", "import time, sys; time.sleep(1); sys.exit(3)"],
    }
    # when it runs them
    began = time.monotonic()
    code = supervisor.run(commands)
    # then it returned the dead one's exit code soon, having stopped the other
    assert code == 3
    assert time.monotonic() - began < 30
    assert supervisor.processes["sleeper"].returncode == -signal.SIGTERM
    assert "launcher: quitter exited with code 3" in lines
    assert lines[-1] == "launcher: every process has exited"


def test_the_demo_environment_keeps_a_configured_broker():
    # given a broker in the environment
    env = demo_environment({"CELERY_BROKER_URL": "redis://127.0.0.1:6379/9"})
    # then the demo uses it, with the local settings
    assert env["CELERY_BROKER_URL"] == "redis://127.0.0.1:6379/9"
    assert env["DJANGO_SETTINGS_MODULE"] == "reviewqueue.settings.local"
    # and without one, the filesystem broker
    assert demo_environment({"CELERY_BROKER_URL": ""})["CELERY_BROKER_URL"].startswith(
        "filesystem://"
    )
