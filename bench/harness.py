"""The pieces every benchmark shares: a throwaway database, accounts, a gunicorn
server, a keep-alive HTTP client and the result table.

Nothing here knows about a particular benchmark. The database is derived from
``DATABASE_URL`` (``<name>_bench`` on the same server), dropped and recreated on each
run; the server enqueues to a Redis database of its own, flushed before and after.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
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


# -- who used the CPU ----------------------------------------------------------------
#
# The machine may be shared (other people's test runs): a figure measured while
# something else took half the cores means little. CpuMeter splits the machine's busy
# time during a run into this benchmark's processes (the client, gunicorn and its
# workers), PostgreSQL's processes, and everything else ("foreign").

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def processes() -> Iterator[tuple[int, str, list[str]]]:
    """(pid, command name, the fields of ``/proc/<pid>/stat`` after the name) of every
    process alive now: ``fields[0]`` is the state, ``fields[1]`` the parent pid."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                text = f.read()
        except OSError:
            continue  # gone meanwhile
        name_ends = text.rindex(")")
        yield int(entry), text[text.index("(") + 1 : name_ends], text[name_ends + 2 :].split()


def _process_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command name, CPU seconds used), from /proc.

    For PostgreSQL processes the name is their title (``postgres: 15/main: postgres
    reviewqueue_bench 127.0.0.1(5432) idle``), which names the database of a backend.
    """
    table = {}
    for pid, name, fields in processes():
        # fields[11] and fields[12] are utime and stime.
        if name.startswith("postgres"):
            try:
                with open(f"/proc/{pid}/cmdline") as f:
                    name = f.read().replace("\0", " ").strip() or name
            except OSError:
                continue
        table[pid] = (int(fields[1]), name, (int(fields[11]) + int(fields[12])) / _TICK)
    return table


def _machine_busy_seconds() -> float:
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / _TICK


@dataclass
class CpuShare:
    """CPU seconds used during a run, and the seconds the machine had."""

    ours: float
    postgres: float
    foreign: float
    capacity: float

    @property
    def foreign_share(self) -> float:
        return self.foreign / self.capacity if self.capacity else 0.0

    @property
    def busy_share(self) -> float:
        used = self.ours + self.postgres + self.foreign
        return used / self.capacity if self.capacity else 0.0


class CpuMeter:
    """Measure who used the CPU between ``start()`` and ``stop()`` (Linux only).

    PostgreSQL's share is its backends serving ``database`` plus its shared background
    processes (WAL writer, checkpointer...); backends of other databases are foreign.
    """

    def __init__(self, server: Server, database: str) -> None:
        self.server = server
        self.database = f" {database} "
        self.available = os.path.exists("/proc/stat")

    def _sample(self) -> tuple[float, float, dict[int, tuple[str, float]]]:
        """(time, machine busy seconds, pid -> ("ours" | "postgres", CPU seconds))."""
        ours_roots = {os.getpid(), self.server.process.pid}
        processes = {}
        for pid, (ppid, name, seconds) in _process_table().items():
            if pid in ours_roots or ppid in ours_roots:
                processes[pid] = ("ours", seconds)
            elif name.startswith("postgres"):
                backend = "(" in name or "[local]" in name
                if self.database in f"{name} " or not backend:
                    processes[pid] = ("postgres", seconds)
        return time.monotonic(), _machine_busy_seconds(), processes

    def start(self) -> None:
        self.began = self._sample() if self.available else None

    def stop(self) -> CpuShare | None:
        if not self.available or self.began is None:
            return None
        t0, busy0, before = self.began
        t1, busy1, after = self._sample()
        used = {"ours": 0.0, "postgres": 0.0}
        # Per process: a backend that Django reconnected during the run is new, and
        # counts from zero. (What a process that ended during the run used is lost.)
        for pid, (kind, seconds) in after.items():
            used[kind] += max(0.0, seconds - before.get(pid, (kind, 0.0))[1])
        foreign = max(0.0, (busy1 - busy0) - used["ours"] - used["postgres"])
        return CpuShare(used["ours"], used["postgres"], foreign, (t1 - t0) * (os.cpu_count() or 1))

    def wait_for_quiet(self, *, below: float = 0.2, timeout: float = 60.0) -> float:
        """Wait until other processes use less than ``below`` of the machine over a
        second, or ``timeout`` passes; the share they used last."""
        if timeout <= 0:
            return 0.0
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            self.start()
            time.sleep(1.0)
            share = self.stop()
            if share is None or share.foreign_share < below or time.monotonic() > deadline:
                if waited:
                    print(f"  (other processes now at {share.foreign_share:.0%})", flush=True)
                return share.foreign_share if share else 0.0
            if not waited:
                print(
                    f"  other processes use {share.foreign_share:.0%} of the machine; "
                    f"waiting up to {timeout:.0f} s for them",
                    flush=True,
                )
                waited = True


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


# -- the table ------------------------------------------------------------------------

_GOAL_RE = re.compile(r"^\s*(>=|<=|<|>)\s*([\d,._]+)")
_BOUNDS = {
    ">=": lambda figure, bound: figure >= bound,
    "<=": lambda figure, bound: figure <= bound,
    ">": lambda figure, bound: figure > bound,
    "<": lambda figure, bound: figure < bound,
}


def goal_met(row: Row) -> str:
    """``yes``/``no`` when the goal is a bound (``>= <= > <``) on a numeric figure."""
    match = _GOAL_RE.match(row.goal)
    if not match or not isinstance(row.figure, int | float):
        return ""
    bound = float(match.group(2).replace(",", "").replace("_", ""))
    return "yes" if _BOUNDS[match.group(1)](row.figure, bound) else "no"


def format_figure(figure: float | int | str) -> str:
    if isinstance(figure, str):
        return figure
    if abs(figure) >= 100:
        return f"{figure:,.0f}"
    return f"{figure:.3g}"


HEADER = ("benchmark", "figure", "unit", "goal", "met", "note")


def table_cells(rows: Sequence[Row]) -> list[tuple[str, ...]]:
    return [(r.name, format_figure(r.figure), r.unit, r.goal, goal_met(r), r.note) for r in rows]


def table_text(rows: Sequence[Row]) -> str:
    cells = [HEADER, *table_cells(rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]
    right = {1}  # figures align right

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()

    return "\n".join([line(cells[0]), line(tuple("-" * w for w in widths)), *map(line, cells[1:])])


def table_markdown(rows: Sequence[Row]) -> str:
    def line(row: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"

    separator = "|" + "|".join("---:" if i == 1 else "---" for i in range(len(HEADER))) + "|"
    return "\n".join([line(HEADER), separator, *(line(r) for r in table_cells(rows))])


def machine_facts(database_url: str) -> dict[str, str]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": (commit or "?") + (" (with local changes)" if dirty else ""),
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "postgresql": database_version(database_url),
    }
