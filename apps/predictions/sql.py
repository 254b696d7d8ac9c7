"""The predictions table's raw SQL: a batch inserted in one statement.

On PostgreSQL the rows travel as one JSON array that ``jsonb_to_recordset`` expands:
one bound parameter instead of thirteen per row, which the server parses in one pass
(quoting and parsing a 13,000-parameter VALUES list cost four times as much; see
docs/performance.md), bound on the server. Each JSON part was encoded once
(``encoding.Encoded``) and is copied in as text. SQLite (the embedded default) gets the
portable multi-row VALUES statement. Both skip rows whose ``(model_version,
external_id)`` is stored already and return the new rows' ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

from django.db import connection
from django.db.models import Field

from apps.core.db import on_postgresql, server_binding_cursor

from .candidates import Candidate
from .encoding import canonical_json
from .models import Prediction

# The columns intake writes, and each candidate's row in the same order, as Python
# values (portable insert) and as a JSON object (PostgreSQL insert).
_INSERT_FIELDS: list[Field] = [
    Prediction._meta.get_field(name)  # type: ignore[misc]
    for name in (
        "model_version",
        "external_id",
        "content_hash",
        "producer",
        "features",
        "context",
        "label",
        "probabilities",
        "attributions",
        "routed",
        "reasons",
        "selection_probability",
        "created_at",
    )
]


def _row_values(c: Candidate, producer_id: int | None, now: datetime) -> tuple[Any, ...]:
    return (
        c.version.id,
        c.clean.external_id,
        c.content_hash,
        producer_id,
        c.clean.features,
        c.clean.context,
        c.clean.label,
        c.clean.probabilities,
        c.clean.attributions,
        c.decision.routed,
        list(c.decision.reasons),
        c.decision.selection_probability,
        now,
    )


_ROW_JSON = "{" + ",".join(f'"{f.column}":%s' for f in _INSERT_FIELDS) + "}"


def _row_json(c: Candidate, producer_json: str, now_json: str) -> str:
    return _ROW_JSON % (
        c.version.id,
        canonical_json(c.clean.external_id),
        canonical_json(c.content_hash),
        producer_json,
        c.encoded.features,
        c.encoded.context,
        c.encoded.label,
        c.encoded.probabilities,
        c.encoded.attributions,
        "true" if c.decision.routed else "false",
        canonical_json(c.decision.reasons),
        canonical_json(c.decision.selection_probability),
        now_json,
    )


def _column(field: Field) -> str:
    return connection.ops.quote_name(field.column or field.name)


def _prediction_insert_sql(source: str) -> str:
    qn = connection.ops.quote_name
    columns = ", ".join(_column(f) for f in _INSERT_FIELDS)
    # Only identifiers from the model's own metadata are formatted in; values are bound.
    return (
        f"INSERT INTO {qn(Prediction._meta.db_table)} ({columns}) {source} "
        f"ON CONFLICT ({qn('model_version_id')}, {qn('external_id')}) DO NOTHING "
        f"RETURNING {qn('id')}, {qn('model_version_id')}, {qn('external_id')}"
    )


def _from_recordset(fields: Sequence[Field]) -> str:
    """``SELECT <columns> FROM`` the rows of one JSON array parameter, typed as the
    columns are."""
    columns = ", ".join(_column(f) for f in fields)
    record = ", ".join(f"{_column(f)} {f.db_type(connection)}" for f in fields)
    return f"SELECT {columns} FROM jsonb_to_recordset(%s::jsonb) AS r({record})"  # noqa: S608


@cache
def _recordset_insert_sql() -> str:
    return _prediction_insert_sql(_from_recordset(_INSERT_FIELDS))


def predictions_insert_new(
    candidates: Sequence[Candidate], *, producer_id: int | None, now: datetime
) -> dict[tuple[int, str], int]:
    """Insert the predictions not stored yet, in one statement; their ids by key
    (model version id, external id). Runs in the caller's transaction."""
    if not candidates:
        return {}
    if on_postgresql():
        producer_json = "null" if producer_id is None else str(int(producer_id))
        now_json = canonical_json(now.isoformat())
        rows = ",".join([_row_json(c, producer_json, now_json) for c in candidates])
        sql, params = _recordset_insert_sql(), [f"[{rows}]"]
        cursor = server_binding_cursor()
    else:
        row = "(" + ", ".join(["%s"] * len(_INSERT_FIELDS)) + ")"
        sql = _prediction_insert_sql(f"VALUES {', '.join([row] * len(candidates))}")
        params = [
            f.get_db_prep_save(value, connection)
            for c in candidates
            for f, value in zip(_INSERT_FIELDS, _row_values(c, producer_id, now), strict=True)
        ]
        cursor = connection.cursor()
    with cursor:
        cursor.execute(sql, params)
        return {(mv, ext): pk for pk, mv, ext in cursor.fetchall()}
