"""Bounded retries with exponential backoff, full jitter and ``Retry-After``.

A request is tried at most ``max_attempts`` times. Between tries the client sleeps
``uniform(0, min(backoff_max, backoff_base * 2**n))`` (full jitter, so a fleet of
pipelines that failed together does not come back together), or, when the server
sent ``Retry-After``, at least that long. A ``Retry-After`` longer than
``max_retry_after`` is not waited out: the client gives up at once rather than block
a pipeline for an unbounded time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_retry_after: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.backoff_base < 0 or self.backoff_max < 0 or self.max_retry_after < 0:
            raise ValueError("delays must not be negative")

    def delay(self, failures: int, *, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1-based)."""
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (failures - 1))
        jittered = rng.uniform(0, ceiling)
        if retry_after is None:
            return jittered
        # The server's word is a floor; a little jitter on top spreads the herd.
        return retry_after + rng.uniform(0, min(self.backoff_base, ceiling))


def retryable_status(status: int) -> bool:
    """429 and every 5xx are worth another try; other statuses are answers."""
    return status == 429 or 500 <= status <= 599


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())
