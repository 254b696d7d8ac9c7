"""The pieces every benchmark shares: a throwaway database, accounts, a gunicorn
server and a keep-alive HTTP client (the CPU meter is ``bench.cpu``, the result table
``bench.table``).

Nothing here knows about a particular benchmark. The database is derived from
``DATABASE_URL`` (``<name>_bench`` on the same server), dropped and recreated on each
run; the server enqueues to a Redis database of its own, flushed before and after.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from psycopg import sql

from reviewqueue.launcher import Gunicorn as Server
from reviewqueue.launcher import gunicorn_start

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/reviewqueue"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/14"


class BenchFailure(RuntimeError):
    """The system under test answered wrongly; the figure would mean nothing."""


class Row(NamedTuple):
    """One line of the result table. ``goal`` is like ``>= 6,000 predictions/s``."""

    name: str
    figure: float | int | str
    unit: str
    goal: str = ""
    note: str = ""


# -- the database ---------------------------------------------------------------------


def bench_database_url(database_url: str) -> str:
    """``DATABASE_URL`` with its database name suffixed ``_bench``."""
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/") or "reviewqueue"
    return urlunsplit(parts._replace(path=f"/{name}_bench"))


def _maintenance_url(database_url: str) -> tuple[str, str]:
    parts = urlsplit(database_url)
    return urlunsplit(parts._replace(path="/postgres")), parts.path.lstrip("/")


_DROP = "DROP DATABASE IF EXISTS {} WITH (FORCE)"


def database_recreate(database_url: str) -> None:
    """Drop the database named by ``database_url`` if it exists, and create it empty."""
    admin_url, name = _maintenance_url(database_url)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL(_DROP).format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def database_drop(database_url: str) -> None:
    admin_url, name = _maintenance_url(database_url)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL(_DROP).format(sql.Identifier(name)))


def database_version(database_url: str) -> str:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return row[0].split()[0] if row else "?"


def redis_flush(url: str) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.flushdb()
    finally:
        client.close()


# -- processes ------------------------------------------------------------------------


def server_environment(*, database_url: str, broker_url: str) -> dict[str, str]:
    """The environment of a production-like deployment on this machine (no TLS)."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="reviewqueue.settings.production",
        DATABASE_URL=database_url,
        CELERY_BROKER_URL=broker_url,
        DJANGO_SECRET_KEY=secrets.token_urlsafe(48),
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        DJANGO_DEBUG="false",
        # Plain HTTP on the loopback: no redirect to https.
        DJANGO_SECURE_SSL_REDIRECT="false",
        DJANGO_LOG_LEVEL="WARNING",
    )
    return env


def manage(env: dict[str, str], *args: str) -> str:
    """Run ``manage.py`` with ``args``; its standard output."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def django_in_process(*, database_url: str, broker_url: str) -> dict[str, str]:
    """For the profilers: a fresh, migrated database and Django set up in this process
    (its test client then runs the same code a server would). The environment used."""
    import warnings

    env = server_environment(database_url=database_url, broker_url=broker_url)
    env["DJANGO_ALLOWED_HOSTS"] = "testserver,127.0.0.1,localhost"
    database_recreate(database_url)
    redis_flush(broker_url)
    manage(env, "migrate", "--noinput")
    os.environ.update(env)
    # No collectstatic here; whitenoise's warning about it says nothing about the API.
    warnings.filterwarnings("ignore", message="No directory at")

    import django

    django.setup()
    return env


@contextmanager
def profile_database() -> Iterator[tuple[str, str]]:
    """For the profilers: the database (``<name>_profile`` beside the bench one) and
    broker URLs; afterwards Django's connections are closed, the database dropped and
    the broker flushed."""
    base = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    database_url = bench_database_url(base).removesuffix("_bench") + "_profile"
    broker_url = os.environ.get("BENCH_BROKER_URL", DEFAULT_BROKER_URL)
    try:
        yield database_url, broker_url
    finally:
        if "django.db" in sys.modules:
            from django.db import connections

            connections.close_all()
        database_drop(database_url)
        redis_flush(broker_url)


def server_start(
    env: dict[str, str],
    *,
    workers: int,
    worker_class: str,
    threads: int,
    log_path: Path,
    ready_timeout: float = 60.0,
) -> Server:
    """Start gunicorn (the project's one launcher) and wait until ``/healthz`` answers 200."""
    return gunicorn_start(
        env,
        workers=workers,
        worker_class=worker_class,
        threads=threads,
        timeout=120,
        log_path=log_path,
        ready_timeout=ready_timeout,
    )


# -- HTTP -----------------------------------------------------------------------------


class Http:
    """One keep-alive connection; not thread-safe, so one per client thread.

    ``http.client`` reconnects by itself when the server closes the connection after
    an answer (gunicorn's sync workers do), so it also works without keep-alive.
    """

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 120.0) -> None:
        parts = urlsplit(base_url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        self.headers = {"Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Token {token}"

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        return response.status, response.read()

    def json(self, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
        body = None if payload is None else json.dumps(payload).encode()
        status, raw = self.request(method, path, body)
        return status, json.loads(raw) if raw else None

    def close(self) -> None:
        self.conn.close()


# -- the shared context ---------------------------------------------------------------


@dataclass
class Context:
    """What a benchmark gets: a running server, its environment and two accounts."""

    server: Server
    env: dict[str, str]
    database_url: str
    admin_token: str
    producer_token: str
    client_threads: int
    runs: int
    requests_per_run: int
    quiet_wait: float = 60.0  # seconds to wait for other load to drop before a timed run
    facts: dict[str, str] = field(default_factory=dict)

    @property
    def database_name(self) -> str:
        return urlsplit(self.database_url).path.lstrip("/")

    def http(self, token: str | None = None) -> Http:
        return Http(self.server.base_url, token)

    def manage(self, *args: str) -> str:
        return manage(self.env, *args)


def linear_model_spec(name: str, *, n_features: int, queue: str) -> dict[str, Any]:
    """A model version with ``n_features`` numeric features ``f0``... and a linear
    explainer (no artifact), routing everything below 0.99 confidence to ``queue``."""
    return {
        "name": name,
        "version": "1",
        "task": "binary_classification",
        "labels": ["approve", "deny"],
        "features": [{"name": f"f{i}", "type": "numeric"} for i in range(n_features)],
        "explainer": {
            "kind": "linear",
            "coef": [0.1] * n_features,
            "intercept": 0.0,
            "background_mean": [0.0] * n_features,
        },
        "routing": {"min_confidence": 0.99, "queue": queue},
    }


def ready_items_insert(conn: psycopg.Connection, *, model_id: int, queue_id: int) -> None:
    """A ready review item in ``queue_id`` for every prediction of ``model_id``, due in
    about four hours (spread over 997 seconds) with a random priority."""
    conn.execute(
        """
        INSERT INTO reviews_reviewitem
            (prediction_id, queue_id, status, reasons, priority, due_at,
             explanation_status, explanation_error, lease_expiries, created_at,
             updated_at)
        SELECT p.id, %s, 'ready', p.reasons, random(),
               now() + interval '4 hours' + (p.id %% 997) * interval '1 second',
               'ready', '', 0, now(), now()
        FROM predictions_prediction p WHERE p.model_version_id = %s
        """,
        [queue_id, model_id],
    )


def account_create(env: dict[str, str], name: str, role: str) -> str:
    """Create an account with ``role``; its API token (the command's last line)."""
    output = manage(env, "create_account", name, "--role", role, "--token")
    return output.strip().splitlines()[-1].strip()
