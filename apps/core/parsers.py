"""The API's JSON parser: strict where ambiguity could be exploited, lenient where a
field-by-field refusal serves the caller better.

- Duplicate keys in an object are refused (400 ``malformed_body``): parsers disagree on
  which one wins (the first, the last, an error), so a proxy or a log could read a
  different body from the one the server acts on.
- Nesting deeper than the interpreter's recursion limit is refused as too deep, never
  a RecursionError; integers longer than Python's digit limit (4,300) and bytes that
  are not valid in the request's charset are refused as malformed.
- ``NaN`` and ``Infinity`` literals, and text that PostgreSQL cannot store (NUL
  characters, lone surrogates), are parsed: validation then refuses them by field name
  (and, in a batch of predictions, only in the item that holds them).
"""

import codecs
import json
from typing import Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError


class DuplicateKey(ValueError):
    """A JSON object gave the same key twice."""


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` that builds the object, refusing a key given twice."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(f"duplicate key {key!r} in an object")
            seen.add(key)
    return obj


def json_loads(text: str | bytes) -> Any:
    """``json.loads`` with the API's rules (duplicate keys refused)."""
    return json.loads(text, object_pairs_hook=unique_keys)


class JSONParser(parsers.JSONParser):
    """JSON that accepts the ``NaN`` and ``Infinity`` literals many producers emit
    (Python's ``json.dumps`` among them), so that validation can refuse them by field
    name instead of failing the whole body as unparseable; duplicate keys are refused."""

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            return json.load(codecs.getreader(encoding)(stream), object_pairs_hook=unique_keys)
        except RecursionError as exc:
            raise ParseError("JSON nested too deeply.") from exc
        except DuplicateKey as exc:
            raise ParseError(f"JSON parse error - {exc}.") from exc
        except (ValueError, LookupError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc
