"""The explanations table's raw SQL (PostgreSQL): a batch inserted from one JSON array."""

import json
from datetime import datetime
from typing import Any

from django.db import connection

from .models import Explanation

# The explanation columns a batch insert writes, with their SQL types.
_STORED = (
    ("prediction_id", "bigint"),
    ("method", "text"),
    ("output", "text"),
    ("base_value", "double precision"),
    ("model_output", "double precision"),
    ("contributions", "jsonb"),
    ("additivity_error", "double precision"),
    ("seconds", "double precision"),
    ("document", "text"),
)


def explanations_insert_sql(
    explanations: list[Explanation], *, now: datetime
) -> tuple[str, list[Any]]:
    """``INSERT ... ON CONFLICT DO NOTHING`` of ``explanations`` and its parameters, to
    run by itself or as a data-modifying CTE of a larger statement.

    The rows travel as one JSON array, meant to be bound on the server
    (``apps.core.db.server_binding_cursor``): a batch is a megabyte of contributions
    and documents, which client-side binding would escape into the SQL text.
    """
    qn = connection.ops.quote_name
    columns = ", ".join(qn(name) for name, _ in _STORED)
    record = ", ".join(f"{qn(name)} {kind}" for name, kind in _STORED)
    sql = (
        f"INSERT INTO {qn(Explanation._meta.db_table)} ({columns}, created_at) "  # noqa: S608
        f"SELECT {columns}, %s FROM jsonb_to_recordset(%s::jsonb) AS r({record}) "
        f"ON CONFLICT DO NOTHING"
    )
    rows = json.dumps(
        [{name: getattr(e, name) for name, _ in _STORED} for e in explanations],
        allow_nan=False,
    )
    return sql, [now, rows]
