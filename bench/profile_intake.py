"""Where a bulk intake request spends its time, measured in-process.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/reviewqueue \\
        .venv/bin/python bench/profile_intake.py [--batches 20] [--pyinstrument | --cprofile]

Builds ``<database>_profile`` (dropped afterwards), registers the model of
``bench/intake.py`` and posts 1,000-prediction batches through Django's full request
stack (middleware, DRF, the intake service, PostgreSQL, the Redis broker on db 14),
exactly as gunicorn would call it. Named phases are timed by thin wrappers around the
functions that do them; each phase's time excludes the phases nested in it, and what
no phase claims is reported as the rest (Django and DRF dispatch, authentication,
outcome assembly). ``--pyinstrument`` (if installed) or ``--cprofile`` print a
call tree of one batch instead.
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness, intake


class GcClock:
    """Time spent in the cyclic garbage collector, whichever phase it interrupted."""

    def __init__(self) -> None:
        self.total = 0.0
        self.began = 0.0
        gc.callbacks.append(self.callback)

    def callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self.began = time.perf_counter()
        else:
            self.total += time.perf_counter() - self.began


class PhaseClock:
    """Exclusive wall time per phase: a nested phase's time is taken off its parent."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.stack: list[list[float]] = []  # [start, time taken by children]

    def wrap(self, phase: str | Callable[..., str], func: Callable) -> Callable:
        """``func`` timed under ``phase``, or under ``phase(*args)`` if it is callable."""

        @functools.wraps(func)
        def timed(*args: Any, **kwargs: Any) -> Any:
            frame = [time.perf_counter(), 0.0]
            self.stack.append(frame)
            try:
                return func(*args, **kwargs)
            finally:
                self.stack.pop()
                spent = time.perf_counter() - frame[0]
                name = phase(*args) if callable(phase) else phase
                self.totals[name] += spent - frame[1]
                if self.stack:
                    self.stack[-1][1] += spent

        return timed

    def reset(self) -> None:
        self.totals.clear()


def sql_phase(cursor: Any, sql: str, *args: Any) -> str:
    head = sql.lstrip()[:40].lower()
    if head.startswith('insert into "predictions_prediction"'):
        return "SQL insert predictions (execute)"
    if head.startswith('insert into "reviews_reviewitem"'):
        return "SQL insert review items (execute)"
    return "SQL other statements (execute)"


SQL_PHASES = (
    "SQL insert predictions (execute)",
    "SQL insert review items (execute)",
    "SQL other statements (execute)",
)

# (phase, "module:Owner.attribute") in pipeline order; a phase may be done by several
# functions (before and after a change), and targets missing from the code are skipped.
TARGETS: list[tuple[str | Callable[..., str], str]] = [
    ("authentication", "rest_framework.authentication:TokenAuthentication.authenticate"),
    ("JSON parse", "apps.core.parsers:JSONParser.parse"),
    ("model lookup (SQL)", "apps.predictions.services:model_versions_by_ref"),
    ("validation", "apps.predictions.validation:PredictionSchema.clean"),
    ("routing", "apps.registry.routing:route"),
    ("JSON encoding of the parts", "apps.predictions.encoding:Encoded.of"),
    ("content hash", "apps.predictions.candidates:content_digest"),
    ("predictions insert: building parameters", "apps.predictions.services:predictions_insert_new"),
    ("lookup of resent predictions", "apps.predictions.services:_stored"),
    (
        "review items insert: building parameters",
        "apps.reviews.services.items:review_items_create",
    ),
    (
        "review items insert: building parameters",
        "apps.reviews.services.items:ReviewItem.objects.bulk_create",
    ),
    (sql_phase, "django.db.backends.utils:CursorWrapper.execute"),
    ("SQL commit", "django.db.backends.postgresql.base:DatabaseWrapper._commit"),
    ("enqueue explanations (Redis)", "apps.core.enqueue:enqueue"),
    ("response rendering", "rest_framework.renderers:JSONRenderer.render"),
]


def instrument(clock: PhaseClock) -> list[str]:
    """Wrap the functions that make up intake; the phase names, in pipeline order."""
    names: list[str] = []
    for phase, target in TARGETS:
        module_name, _, path = target.partition(":")
        *owner_path, attribute = path.split(".")
        owner: Any = importlib.import_module(module_name)
        for part in owner_path:
            owner = getattr(owner, part, None)
        if owner is None or not hasattr(owner, attribute):
            continue
        setattr(owner, attribute, clock.wrap(phase, getattr(owner, attribute)))
        for name in SQL_PHASES if callable(phase) else (phase,):
            if name not in names:
                names.append(name)
    return names


def setup(database_url: str, broker_url: str) -> tuple[Any, str]:
    """A migrated database, Django set up in this process, the producer's client."""
    env = harness.django_in_process(database_url=database_url, broker_url=broker_url)
    from django.test import Client

    from apps.accounts.services import account_token, account_upsert

    admin = account_upsert(username="profile-admin", roles=["admin"])
    producer = account_upsert(username="profile-producer", roles=["producer"])
    admin_client = Client(HTTP_AUTHORIZATION=f"Token {account_token(user=admin)}")
    model = intake.linear_model()
    spec = intake.model_spec(model, intake.min_confidence_for(model, intake.TARGET_LOW_CONFIDENCE))
    response = admin_client.post("/api/v1/models/", spec, content_type="application/json")
    assert response.status_code == 201, response.content
    return Client(HTTP_AUTHORIZATION=f"Token {account_token(user=producer)}"), env


def post(client: Any, body: bytes) -> None:
    response = client.post("/api/v1/predictions/", body, content_type="application/json")
    data = response.json()
    assert response.status_code == 200 and data["errors"] == 0, response.content[:500]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--pyinstrument", action="store_true")
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args()

    with harness.profile_database() as (database_url, broker_url):
        client, _ = setup(database_url, broker_url)
        model = intake.linear_model()
        rng = random.Random(99)
        for body in intake.batch_bodies(rng, model, "warm", 3):
            post(client, body)
        bodies = intake.batch_bodies(rng, model, "batch", args.batches)
        if args.pyinstrument or args.cprofile:
            call_tree(client, bodies[0], pyinstrument=args.pyinstrument)
        else:
            measure(client, bodies)
    return 0


def measure(client: Any, bodies: list[bytes]) -> None:
    """Post each body with the phases instrumented; print the medians as markdown."""
    clock = PhaseClock()
    phases = instrument(clock)
    collector = GcClock()
    per_batch: dict[str, list[float]] = defaultdict(list)
    totals, cpu, collected = [], [], []
    for body in bodies:
        clock.reset()
        collector.total = 0.0
        began, began_cpu = time.perf_counter(), time.process_time()
        post(client, body)
        totals.append(time.perf_counter() - began)
        cpu.append(time.process_time() - began_cpu)
        collected.append(collector.total)
        for phase in phases:
            per_batch[phase].append(clock.totals.get(phase, 0.0))
        claimed = sum(clock.totals.get(phase, 0.0) for phase in phases)
        per_batch["rest (Django/DRF dispatch, glue)"].append(totals[-1] - claimed)

    total = statistics.median(totals)
    print(f"\n{len(totals)} batches of {intake.ITEMS_PER_REQUEST}, one at a time:")
    print(f"median {total * 1000:.1f} ms per batch, of which this process's CPU ", end="")
    print(f"{statistics.median(cpu) * 1000:.1f} ms (the rest: waiting on PostgreSQL and Redis)\n")
    print("| phase | ms per batch (median) | share |")
    print("|---|---:|---:|")
    rows = [*per_batch.items(), ("of all these: cyclic garbage collection", collected)]
    for phase, values in rows:
        median = statistics.median(values)
        print(f"| {phase} | {median * 1000:.1f} | {median / total:.0%} |")


def call_tree(client: Any, body: bytes, *, pyinstrument: bool) -> None:
    if pyinstrument:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
        post(client, body)
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))
        return
    import cProfile
    import pstats

    profile = cProfile.Profile()
    profile.runcall(post, client, body)
    pstats.Stats(profile).sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    sys.exit(main())
