"""``make retrain-demo``: the demo's accounts, a real server, and the retraining pipeline.

The server side of this command only does what an operator would: it makes sure the
demo accounts exist (without touching their passwords) and reads their API tokens.
Everything else, from registering the model to pulling the labels, is the pipeline in
``scripts/retrain_demo.py``, which talks to a real HTTP server: the one at ``--url``,
or a gunicorn this command starts on a free local port against the same database and
stops afterwards.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.accounts.services import account_token, account_upsert

from .demo_setup import DEMO_ACCOUNTS

SCRIPT = Path(settings.BASE_DIR) / "scripts" / "retrain_demo.py"
SERVER_START_SECONDS = 60


def pipeline_module() -> ModuleType:
    """``scripts/retrain_demo.py``, loaded from its file (``scripts`` is no package)."""
    spec = importlib.util.spec_from_file_location("retrain_demo_pipeline", SCRIPT)
    if spec is None or spec.loader is None:
        raise CommandError(f"cannot load {SCRIPT}")
    module = importlib.util.module_from_spec(spec)
    # Registered first: dataclasses look their module up while the class is made.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def demo_tokens() -> dict[str, str]:
    """The API token of each demo account, by role; accounts are created if missing."""
    return {
        str(role): account_token(user=account_upsert(username=username, roles=[role]))
        for username, role in DEMO_ACCOUNTS
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalServer:
    """A gunicorn serving this project on 127.0.0.1, with this process's environment."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LocalServer:
        self.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [
                sys.executable,
                "-m",
                "gunicorn",
                "reviewqueue.wsgi",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                "1",
                "--timeout",
                "300",
                "--log-level",
                "warning",
            ],
            cwd=settings.BASE_DIR,
            env={**os.environ},
        )
        try:
            self._wait_until_healthy()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_until_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + SERVER_START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise CommandError(f"the server exited with code {self.process.returncode}")
            try:
                # The first request loads the whole project: give it time on a busy machine.
                if requests.get(f"{self.url}/healthz", timeout=30).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise CommandError(f"the server did not answer within {SERVER_START_SECONDS}s")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


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
