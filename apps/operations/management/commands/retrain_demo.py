"""``make retrain-demo``: the demo's accounts, a real server, and the retraining pipeline.

The server side of this command only does what an operator would: it makes sure the
demo accounts exist (without touching their passwords) and reads their API tokens.
Everything else, from registering the model to pulling the labels, is the pipeline in
``scripts/retrain_demo.py``, which talks to a real HTTP server: the one at ``--url``,
or a gunicorn this command starts on a free local port against the same database and
stops afterwards.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.accounts.services import account_token, account_upsert
from apps.operations.scripts import script_module
from reviewqueue.launcher import LaunchError, gunicorn_start

from .demo_setup import DEMO_ACCOUNTS

SERVER_START_SECONDS = 60


def pipeline_module() -> ModuleType:
    """``scripts/retrain_demo.py``, the pipeline (``scripts`` is no package)."""
    try:
        return script_module("retrain_demo")
    except (ImportError, OSError) as exc:
        raise CommandError(f"cannot load the pipeline: {exc}") from exc


def demo_tokens() -> dict[str, str]:
    """The API token of each demo account, by role; accounts are created if missing."""
    return {
        str(role): account_token(user=account_upsert(username=username, roles=[role]))
        for username, role in DEMO_ACCOUNTS
    }


class LocalServer:
    """A gunicorn serving this project on a free local port, with this process's
    environment (so the same database), for as long as the block runs."""

    def __enter__(self) -> LocalServer:
        try:
            # The first request loads the whole project: give it time on a busy machine.
            self.server = gunicorn_start(
                os.environ, timeout=300, ready_timeout=SERVER_START_SECONDS
            )
        except LaunchError as exc:
            raise CommandError(str(exc)) from exc
        self.url = self.server.base_url
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


class Command(BaseCommand):
    help = (
        "Close the loop: review the routed predictions of a demo model, pull the labels "
        "through the Python client, retrain, register the next version and print held-out "
        "accuracy before and after."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--url", help="a running server to use (default: start one on a free port)"
        )
        parser.add_argument(
            "--traffic-rows", type=int, default=None, help="send only this many rows"
        )
        parser.add_argument("--wait-seconds", type=float, default=120.0)

    def handle(self, *args: Any, **options: Any) -> None:
        pipeline = pipeline_module()
        tokens = demo_tokens()

        def run(url: str) -> None:
            self.stdout.write(f"server: {url}")
            try:
                pipeline.run(
                    base_url=url,
                    tokens=tokens,
                    traffic_rows=options["traffic_rows"],
                    wait_seconds=options["wait_seconds"],
                    write=self.stdout.write,
                )
            except pipeline.DemoError as exc:
                raise CommandError(str(exc)) from exc

        if options["url"]:
            run(options["url"])
            return
        with LocalServer() as server:
            run(server.url)
