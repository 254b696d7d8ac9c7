"""The label feed's cursor: a position in the order (deciding transaction id, decision id).

Opaque to clients; written ``<txid>.<id>``. The start, before every label, is ``0.0``.
"""

import re
from typing import NamedTuple

from apps.core.exceptions import ValidationFailed

_CURSOR_RE = re.compile(r"^(0|[1-9][0-9]{0,18})\.(0|[1-9][0-9]{0,18})$")
_MAX = 2**63 - 1


class Cursor(NamedTuple):
    txid: int
    id: int

    def __str__(self) -> str:
        return f"{self.txid}.{self.id}"


START = Cursor(0, 0)


def cursor_parse(value: str | None) -> Cursor:
    """The cursor a client sent as ``after`` (none: the start); 400 when malformed."""
    if value is None or value == "":
        return START
    match = _CURSOR_RE.match(value)
    if match is None or int(match[1]) > _MAX or int(match[2]) > _MAX:
        raise ValidationFailed(
            "Bad cursor.",
            code="invalid_cursor",
            details={"after": "send back a cursor the feed gave you (X-Next-Cursor)"},
        )
    return Cursor(int(match[1]), int(match[2]))
