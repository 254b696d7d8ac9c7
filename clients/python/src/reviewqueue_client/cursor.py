"""Where a pipeline keeps its place in the labels feed.

The guarantee, with ``ReviewQueueClient.label_pages(store=...)`` or ``consume``:

* The stored cursor is never ahead of the consumer. It is saved only after the
  consumer has taken a whole page (``consume``: the handler returned;
  ``label_pages``/``iter_labels``: the consumer came back for more), so a crash
  mid-page loses nothing: on restart the whole page is fetched again.
* The stored cursor is never torn. ``FileCursorStore`` writes a temporary file in the
  same directory, fsyncs it, renames it over the old one (atomic on POSIX and
  Windows) and fsyncs the directory: after a crash the file holds either the old
  cursor or the new one.
* So delivery is at least once, and a page is delivered twice only when the process
  dies after the consumer finished it and before the rename. To make that exactly
  once, make the sink idempotent on the label's ``cursor`` (or ``prediction_id``), or
  keep the cursor in the same transaction as the sink's writes (a ``CursorStore``
  backed by the sink's own database).

One consumer per store: two processes sharing a cursor file would both read each page.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Protocol


class CursorStore(Protocol):
    def load(self) -> str | None:
        """The cursor to resume from, or None to start from the first label."""

    def save(self, cursor: str) -> None:
        """Remember ``cursor`` durably; called only once the consumer is done with the
        labels before it."""


class MemoryCursorStore:
    """A cursor kept in memory: for tests and for one-shot runs."""

    def __init__(self, cursor: str | None = None) -> None:
        self.cursor = cursor
        self.saves: list[str] = []

    def load(self) -> str | None:
        return self.cursor

    def save(self, cursor: str) -> None:
        self.cursor = cursor
        self.saves.append(cursor)


class FileCursorStore:
    """The cursor in a small JSON file, replaced atomically on every save."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> str | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        cursor = json.loads(text).get("cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise ValueError(f"{self.path}: the stored cursor is not a string")
        return cursor

    def save(self, cursor: str) -> None:
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"cursor": cursor}, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
