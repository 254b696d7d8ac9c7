"""Who used the CPU during a benchmark run, read from ``/proc``.

The machine may be shared (other people's test runs): a figure measured while
something else took half the cores means little. ``CpuMeter`` splits the machine's busy
time during a run into this benchmark's processes (the client, gunicorn and its
workers), PostgreSQL's processes, and everything else ("foreign").
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

from reviewqueue.launcher import Gunicorn as Server

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
