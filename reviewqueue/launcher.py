"""Starting this project's processes: gunicorn, started one way by every caller (the
demo, ``retrain_demo``, bench, the soak and the tests), and the demo's whole stack.

``python -m reviewqueue.launcher demo`` is ``make demo``: it migrates, collects the
static files and runs ``demo_setup``, then serves with gunicorn, a Celery worker and
celery beat until Ctrl-C (or SIGTERM), which stops all three; if one of them dies the
others are stopped too. Without a ``CELERY_BROKER_URL`` in the environment the broker
is kombu's filesystem transport, which needs no server (its folders are set up by
``reviewqueue.settings.local``).

No Django here: bench and the tests import this module outside (or before) settings.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
DEMO_BIND = "127.0.0.1:8000"
# kombu warns about a URL without a host name; the filesystem transport ignores it.
DEMO_BROKER_URL = "filesystem://localhost/"
# How long the processes get to finish what they are doing once asked to stop.
STOP_SECONDS = 30.0


class LaunchError(RuntimeError):
    """A process did not start, or did not become ready."""


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on (at the time of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_status(base_url: str, path: str, *, timeout: float = 30.0) -> int | None:
    """The status of ``GET path``, or None when nothing answers."""
    host, _, port = base_url.removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port or 80), timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def stop_process(process: subprocess.Popen, *, timeout: float = STOP_SECONDS) -> None:
    """SIGTERM (gunicorn and Celery then finish their work in hand), and SIGKILL for
    the process and its own children after ``timeout``."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            process.kill()
        process.wait()


# -- gunicorn -------------------------------------------------------------------------


def gunicorn_command(
    *,
    bind: str,
    workers: int = 1,
    worker_class: str = "sync",
    threads: int = 1,
    timeout: int | None = None,
    log_level: str = "warning",
    access_log: bool = False,
) -> list[str]:
    """The command line that serves ``reviewqueue.wsgi`` at ``bind``."""
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "reviewqueue.wsgi",
        "--bind",
        bind,
        "--workers",
        str(workers),
        "--worker-class",
        worker_class,
        "--threads",
        str(threads),
        "--log-level",
        log_level,
        # Nothing here uses gunicorn's control interface, and its socket's default path
        # is one per user: servers started side by side would take it from each other.
        "--no-control-socket",
    ]
    if timeout is not None:
        command += ["--timeout", str(timeout)]
    if access_log:
        command += ["--access-logfile", "-"]
    return command


@dataclass
class Gunicorn:
    """A gunicorn started by this process, serving on 127.0.0.1:``port``."""

    process: subprocess.Popen
    port: int
    description: str
    log_path: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None:
            return ""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(
        self, *, timeout: float, ready: Callable[[int], bool], path: str = "/healthz"
    ) -> None:
        """Poll ``path`` until its status satisfies ``ready``; LaunchError if gunicorn
        exits first or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LaunchError(
                    f"gunicorn exited with code {self.process.returncode}:\n{self.log_tail()}"
                )
            # The first request loads the whole project: give it time on a busy machine.
            status = http_status(self.base_url, path)
            if status is not None and ready(status):
                return
            time.sleep(0.2)
        raise LaunchError(f"gunicorn did not become ready in {timeout:g}s:\n{self.log_tail()}")

    def stop(self, *, timeout: float = STOP_SECONDS) -> None:
        stop_process(self.process, timeout=timeout)


def gunicorn_start(
    env: Mapping[str, str],
    *,
    workers: int = 1,
    worker_class: str = "sync",
    threads: int = 1,
    timeout: int | None = None,
    log_level: str = "warning",
    log_path: Path | None = None,
    ready_timeout: float = 60.0,
    ready: Callable[[int], bool] = lambda status: status == 200,
) -> Gunicorn:
    """gunicorn on a free loopback port with ``env``, once ``/healthz`` answers as
    ``ready`` wants (by default 200). Its output is appended to ``log_path``, or goes
    where this process's goes."""
    port = free_port()
    command = gunicorn_command(
        bind=f"127.0.0.1:{port}",
        workers=workers,
        worker_class=worker_class,
        threads=threads,
        timeout=timeout,
        log_level=log_level,
    )
    output = log_path.open("ab") if log_path is not None else None
    try:
        process = subprocess.Popen(  # noqa: S603 - our own argv, no shell
            command,
            cwd=ROOT,
            env=dict(env),
            stdout=output,
            stderr=subprocess.STDOUT if output is not None else None,
            start_new_session=True,
        )
    finally:
        if output is not None:
            output.close()
    description = f"{workers} {worker_class} workers" + (
        f" x {threads} threads" if worker_class == "gthread" else ""
    )
    server = Gunicorn(process=process, port=port, description=description, log_path=log_path)
    try:
        server.wait_ready(timeout=ready_timeout, ready=ready)
    except BaseException:
        server.stop()
        raise
    return server


# -- the demo's stack -----------------------------------------------------------------


def celery_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "reviewqueue", *args]


def demo_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with the demo's defaults: the local settings and, unless a broker is
    configured, the filesystem broker."""
    env = dict(environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "reviewqueue.settings.local")
    if not env.get("CELERY_BROKER_URL"):
        env["CELERY_BROKER_URL"] = DEMO_BROKER_URL
    return env


def demo_commands(*, bind: str) -> dict[str, list[str]]:
    """The demo's processes. The worker names no queue, so it consumes every queue the
    settings declare (``CELERY_TASK_QUEUES``: the default one and the explanations')."""
    return {
        "gunicorn": gunicorn_command(bind=bind, workers=2, log_level="info", access_log=True),
        "worker": celery_command(
            "worker", "--concurrency", "2", "--loglevel", "INFO", "--without-mingle"
        ),
        "beat": celery_command("beat", "--loglevel", "INFO"),
    }


class Supervisor:
    """Processes that live and die together.

    Each runs in its own session, so a terminal's Ctrl-C reaches only this process,
    which passes it on once as SIGTERM (gunicorn's and Celery's graceful stop) to all.
    When one exits by itself, the others are stopped and its exit code is returned.
    """

    def __init__(self, env: Mapping[str, str], *, write: Callable[[str], None]) -> None:
        self.env = dict(env)
        self.write = write
        self.processes: dict[str, subprocess.Popen] = {}
        self.signalled: int | None = None

    def start(self, name: str, command: Sequence[str]) -> None:
        self.processes[name] = subprocess.Popen(  # noqa: S603 - our own argv, no shell
            list(command), cwd=ROOT, env=self.env, start_new_session=True
        )

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signalled = signum

    def run(self, commands: Mapping[str, Sequence[str]], *, poll_seconds: float = 0.2) -> int:
        """Start ``commands`` and wait; 0 after a stop asked for by a signal."""
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in handled}
        try:
            for name, command in commands.items():
                self.start(name, command)
            pids = ", ".join(f"{name} {p.pid}" for name, p in self.processes.items())
            self.write(f"launcher: started {pids}; Ctrl-C stops all")
            code = self._wait(poll_seconds)
        finally:
            self.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        self.write("launcher: every process has exited")
        return code

    def _wait(self, poll_seconds: float) -> int:
        while self.signalled is None:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    self.write(f"launcher: {name} exited with code {process.returncode}")
                    return process.returncode or 1
            time.sleep(poll_seconds)
        self.write(f"launcher: {signal.Signals(self.signalled).name}, stopping")
        return 0

    def stop(self) -> None:
        """SIGTERM to every live process at once, then wait for each (SIGKILL after
        ``STOP_SECONDS``)."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            stop_process(process)


def manage(env: Mapping[str, str], *args: str) -> None:
    """``manage.py args`` in the foreground; LaunchError if it fails."""
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=dict(env))  # noqa: S603
    if done.returncode != 0:
        raise LaunchError(f"manage.py {' '.join(args)} failed (exit code {done.returncode})")


def demo(*, bind: str = DEMO_BIND, setup: bool = True) -> int:
    """``make demo``: set up (unless ``setup`` is false), then serve until stopped."""
    env = demo_environment(os.environ)
    if setup:
        manage(env, "migrate", "--noinput")
        manage(env, "collectstatic", "--noinput", "-v0")
        manage(env, "demo_setup", f"--url=http://{bind}/")
    print(f"launcher: broker {env['CELERY_BROKER_URL']}", flush=True)
    return Supervisor(env, write=lambda line: print(line, flush=True)).run(demo_commands(bind=bind))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reviewqueue.launcher")
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="set up the demo and serve it (make demo)")
    demo_parser.add_argument("--bind", default=DEMO_BIND, help="gunicorn's address")
    demo_parser.add_argument(
        "--no-setup", action="store_true", help="serve only (no migrate, static files or setup)"
    )
    args = parser.parse_args(argv)
    try:
        return demo(bind=args.bind, setup=not args.no_setup)
    except LaunchError as exc:
        print(f"launcher: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
