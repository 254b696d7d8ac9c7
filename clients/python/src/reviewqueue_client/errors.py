"""What the client raises.

``ApiError`` (and its subclasses by status) is a refusal the server meant: a 4xx other
than 429, carrying the contract's error body ``{"error": {"code", "message",
"details"}}``. Retrying it would get the same answer, so it is raised at once.
``RetriesExhausted`` is the end of a bounded run of transient failures (429, 5xx,
connection errors, truncated bodies). ``ProtocolError`` means the answer broke the
contract (no ``X-Next-Cursor``, a cursor that does not move).
"""

from __future__ import annotations

import json
from typing import Any


class ReviewQueueError(Exception):
    """Base of everything this package raises."""


class ProtocolError(ReviewQueueError):
    """The server answered something the labels contract does not allow."""


class ApiError(ReviewQueueError):
    """A 4xx answer (not 429): the request itself is wrong; sending it again will not help."""

    def __init__(
        self,
        *,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        method: str = "",
        url: str = "",
        body: str = "",
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.method = method
        self.url = url
        self.body = body
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f" ({self.method} {self.url})" if self.method else ""
        details = f" {json.dumps(self.details, sort_keys=True)}" if self.details else ""
        return f"HTTP {self.status} {self.code}: {self.message}{details}{where}"


class BadRequestError(ApiError):
    """400: a parameter is invalid; ``details`` names each bad field."""


class AuthenticationError(ApiError):
    """401: no token, or a token the server does not know."""


class PermissionDeniedError(ApiError):
    """403: the token's account lacks the role (labels and exports need ``pipeline``)."""


class NotFoundError(ApiError):
    """404: no such model, export or path."""


class ConflictError(ApiError):
    """409: the request conflicts with the current state."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
}


def api_error(*, status: int, body: bytes, method: str, url: str) -> ApiError:
    """The exception for a 4xx answer, read from the contract's error body when it has one."""
    text = body.decode("utf-8", errors="replace")
    code, message = f"http_{status}", text[:1000] or f"HTTP {status}"
    details: dict[str, Any] = {}
    try:
        error = json.loads(text)["error"]
        code = str(error.get("code") or code)
        message = str(error.get("message") or message)
        details = error.get("details") if isinstance(error.get("details"), dict) else {}
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    cls = _BY_STATUS.get(status, ApiError)
    return cls(
        status=status,
        code=code,
        message=message,
        details=details,
        method=method,
        url=url,
        body=text[:10000],
    )


class TransientError(ReviewQueueError):
    """A failure worth retrying: 429, 5xx, a dropped connection, a truncated body."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class IncompleteResponse(TransientError):
    """The body ended before the format says it is complete (a connection cut mid-stream)."""


class RetriesExhausted(ReviewQueueError):
    """Transient failures outlasted the retry policy; ``last`` is the final one."""

    def __init__(self, message: str, *, attempts: int, last: BaseException | None):
        super().__init__(message)
        self.attempts = attempts
        self.last = last
        self.status = getattr(last, "status", None)
