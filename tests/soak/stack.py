"""The real stack of the soak test, started and stopped by the test itself.

A database of its own on the PostgreSQL server of ``DATABASE_URL`` (recreated empty),
a redis-server of its own that the test may stop and start again, gunicorn with
several workers, two Celery workers and celery beat, configured as a deployment
(production settings, plain HTTP on the loopback). The pieces come from
``bench/harness.py`` (database, gunicorn, accounts) and ``tests/workers.py`` (Redis,
Celery workers).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis

from bench.cpu import processes
from bench.harness import (
    ROOT,
    Server,
    account_create,
    database_drop,
    database_recreate,
    manage,
    server_environment,
    server_start,
)
from tests.workers import PrivateRedis, start_worker, stop_worker

# Shorter than a deployment's defaults, so that the sweepers recover lost work within
# a soak of a few minutes; the environment may set others. The beat schedule stays as
# deployed (every 15 to 60 s).
SOAK_SETTINGS = {
    "REVIEW_LEASE_SECONDS": "30",
    "REVIEW_EXPLANATION_GRACE_SECONDS": "10",
    "EXPORT_STALE_SECONDS": "20",
    "DJANGO_LOG_LEVEL": "WARNING",
}


def soak_database_url() -> str:
    """``SOAK_DATABASE_URL``, or ``DATABASE_URL`` with its database name suffixed
    ``_soak`` (the database is dropped and recreated)."""
    explicit = os.environ.get("SOAK_DATABASE_URL")
    if explicit:
        return explicit
    parts = urlsplit(
        os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/reviewqueue")
    )
    name = parts.path.lstrip("/") or "reviewqueue"
    return urlunsplit(parts._replace(path=f"/{name}_soak"))


def child_pids(parent: int) -> list[int]:
    """The live processes whose parent is ``parent`` (from /proc)."""
    return sorted(
        pid
        for pid, _, fields in processes()
        if int(fields[1]) == parent and fields[0] not in ("Z", "X")
    )


class Stack:
    """Everything the soak runs against. ``start()`` brings it up, ``stop()`` ends every
    process it started and drops the database."""

    def __init__(self, *, database_url: str, gunicorn_workers: int = 4) -> None:
        self.database_url = database_url
        self.gunicorn_workers = gunicorn_workers
        self.dir = Path(tempfile.mkdtemp(prefix="rq-soak-"))
        self.redis = PrivateRedis()
        self.env: dict[str, str] = {}
        self.server: Server | None = None
        self.workers: list[subprocess.Popen] = []
        self.beat: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return self.server.base_url

    def log(self, name: str) -> Path:
        return self.dir / f"{name}.log"

    def start(self) -> None:
        database_recreate(self.database_url)
        self.redis.start()
        self.env = server_environment(database_url=self.database_url, broker_url=self.redis.url)
        self.env.update({k: os.environ.get(k, v) for k, v in SOAK_SETTINGS.items()})
        self.env["EXPORT_ROOT"] = str(self.dir / "exports")
        manage(self.env, "migrate", "--noinput")
        self.server = server_start(
            self.env,
            workers=self.gunicorn_workers,
            worker_class="sync",
            threads=1,
            log_path=self.log("gunicorn"),
        )
        self.workers = [self.worker_start(), self.worker_start()]
        with self.log("beat").open("ab") as output:
            self.beat = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "reviewqueue",
                    "beat",
                    "--schedule",
                    str(self.dir / "beat-schedule"),
                    "--loglevel",
                    "WARNING",
                ],
                cwd=ROOT,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def accounts(self, wanted: dict[str, str]) -> dict[str, str]:
        """Create accounts (username -> role) with ``manage.py create_account --token``;
        username -> API token."""
        with ThreadPoolExecutor(max_workers=4) as pool:
            tokens = pool.map(lambda item: account_create(self.env, *item), wanted.items())
            return dict(zip(wanted, tokens, strict=True))

    def manage(self, *args: str) -> str:
        return manage(self.env, *args)

    # -- faults ---------------------------------------------------------------------

    def worker_start(self) -> subprocess.Popen:
        """A Celery worker as deployed (solo pool, every queue)."""
        process = start_worker(self.redis.url, log=self.log("celery"), **self.env)
        return process

    def worker_kill(self, index: int = 0) -> int:
        """SIGKILL one Celery worker; its pid."""
        process = self.workers.pop(index)
        stop_worker(process, kill=True)
        return process.pid

    def gunicorn_worker_pids(self) -> list[int]:
        assert self.server is not None
        return child_pids(self.server.process.pid)

    def gunicorn_worker_kill(self) -> int:
        """SIGKILL one gunicorn worker (the master starts another); its pid."""
        pid = self.gunicorn_worker_pids()[0]
        os.kill(pid, signal.SIGKILL)
        return pid

    def broker_backlog(self) -> str:
        """Messages waiting in Redis and delivered but not acknowledged, for the record."""
        client = redis.Redis.from_url(self.redis.url, socket_connect_timeout=2)
        try:
            waiting = client.llen("explanations") + client.llen("celery")
            return f"{waiting} queued, {client.hlen('unacked')} unacknowledged"
        finally:
            client.close()

    def redis_stop(self) -> None:
        """Stop the broker. It keeps nothing on disk: queued messages are lost."""
        self.redis.stop()

    def redis_start(self) -> None:
        self.redis.start()

    # -- the end --------------------------------------------------------------------

    def log_errors(self) -> dict[str, int]:
        """Per log, the lines that report an error or a traceback."""
        counts = {}
        for path in sorted(self.dir.glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()
            counts[path.stem] = sum(1 for line in lines if "ERROR" in line or "Traceback" in line)
        return counts

    def log_tails(self, lines: int = 30) -> str:
        parts = []
        for path in sorted(self.dir.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name} (last {lines} lines)\n" + "\n".join(text))
        return "\n".join(parts)

    def stop(self) -> None:
        for process in [*self.workers, *([self.beat] if self.beat else [])]:
            if process.poll() is None:
                process.terminate()
        for process in [*self.workers, *([self.beat] if self.beat else [])]:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.server is not None:
            self.server.stop()
        self.redis.cleanup()
        database_drop(self.database_url)

    def cleanup(self) -> None:
        """Remove the logs and export files (after a passing run)."""
        shutil.rmtree(self.dir, ignore_errors=True)
