"""Real Celery workers and a private Redis for tests that depend on them."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from django.db import connection

from reviewqueue.celery import app as celery_app

ROOT = Path(__file__).resolve().parents[1]


def database_url() -> str:
    """The URL of the test database this process uses, for a worker process."""
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def use_broker(url: str, *, eager: bool) -> None:
    """Point this process's Celery app at another broker. Its connection and producer
    pools were built for the old one (an eager run acquires a producer too): drop both."""
    celery_app.conf.update(broker_url=url, task_always_eager=eager)
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@contextmanager
def broker_in_use(url: str):
    """Send this process's task messages to ``url`` (not run inline) for the block;
    the previous broker and mode after it."""
    saved = (celery_app.conf.broker_url, celery_app.conf.task_always_eager)
    use_broker(url, eager=False)
    try:
        yield url
    finally:
        use_broker(saved[0], eager=saved[1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """A redis-server of the test's own, on a free port, that the test may stop."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tempfile.mkdtemp(prefix="rq-redis-")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
        )
        if not wait_until(self.answers, timeout=10):
            self.stop()
            raise RuntimeError(f"redis-server on port {self.port} did not answer PING in 10 s")

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_worker(broker_url: str, *, log: Path | None = None, **env: str) -> subprocess.Popen:
    """A worker started as a deployment starts it (no -Q: it consumes every queue).

    With ``log``, its output goes to that file (appended) instead of this process's."""
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "reviewqueue.settings.local",
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": broker_url,
        **env,
    }
    output = log.open("ab") if log is not None else None
    try:
        return _popen_worker(environment, output)
    finally:
        if output is not None:
            output.close()


def _popen_worker(environment: dict[str, str], output) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "reviewqueue",
            "worker",
            "--pool",
            "solo",
            "--without-mingle",
            "--without-gossip",
            "--loglevel",
            "WARNING",
        ],
        cwd=ROOT,
        env=environment,
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
    )


def stop_worker(process: subprocess.Popen, *, kill: bool = False) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    process.wait(timeout=30)


@contextmanager
def worker(broker_url: str, **env: str):
    process = start_worker(broker_url, **env)
    try:
        yield process
    finally:
        stop_worker(process)


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes (for other processes):
    whether it held. Callers assert the result (the soak records it first and asserts at
    its end); a wait whose result is ignored lets a test pass without what it waited for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
