"""The reviews app's raw SQL, in one place: the claim, the lease settlement, the
per-reviewer claim lock, and the explanation store's item move.

Each statement is written once for both databases where it can be; what only
PostgreSQL can run (data-modifying CTEs, advisory locks, arrays, server-side binding)
is behind ``apps.core.db.on_postgresql``, and SQLite, the embedded default, takes the
plain form. Only identifiers from the models' own metadata are formatted into SQL;
every value is bound.
"""

from datetime import datetime
from typing import Any

from django.db import connection

from apps.core.db import on_postgresql, server_binding_cursor
from apps.explanations.models import Explanation
from apps.explanations.sql import explanations_insert_sql

from .models import ExplanationStatus, ItemStatus, ReviewItem
from .selectors import item_join

CLAIM_LOCK_NAMESPACE = 0x636C61  # "cla": per-reviewer claim locks


def _items_table() -> str:
    return connection.ops.quote_name(ReviewItem._meta.db_table)


def _skip_locked() -> str:
    return "FOR UPDATE SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""


def claim_sql(in_queues: str) -> str:
    """One statement: pick the first ready item in order, skip locked ones, lease it.

    Parameters: leased status, token, holder id, expiry, now, ready status, then the
    queue ids of ``in_queues``. On PostgreSQL the statement also returns the leased
    item joined with what its output shows (a data-modifying CTE; load the row with
    ``item_join``); elsewhere only its id.
    """
    table = _items_table()
    update = (
        f"UPDATE {table} SET status = %s, lease_token = %s, leased_by_id = %s, "  # noqa: S608
        f"lease_expires_at = %s, updated_at = %s "
        f"WHERE id = (SELECT id FROM {table} WHERE status = %s AND {in_queues} "
        f"ORDER BY due_at, priority DESC, id LIMIT 1 {_skip_locked()}) "
    )
    if not on_postgresql():
        return update + "RETURNING id"
    return f"WITH claimed AS ({update} RETURNING *) " + item_join(connection.vendor).select_sql(
        "claimed"
    )


def settle_sql(in_queues: str) -> str:
    """Leased rows that are the caller's or expired in the caller's queues, locked.

    Parameters: now, leased status, the caller's id, now, then the queue ids of
    ``in_queues``. Columns: id, prediction_id, leased_by_id, lease_expiries, due_at,
    and whether the lease has expired.
    """
    return (
        f"SELECT id, prediction_id, leased_by_id, lease_expiries, due_at, "  # noqa: S608
        f"lease_expires_at <= %s FROM {_items_table()} WHERE status = %s "
        f"AND (leased_by_id = %s OR (lease_expires_at <= %s AND {in_queues})) "
        f"ORDER BY id LIMIT %s {_skip_locked()}"
    )


def claim_lock(*, user_id: int) -> None:
    """Take the caller's transaction-scoped claim lock (PostgreSQL; SQLite runs writers
    one at a time anyway)."""
    if on_postgresql():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [CLAIM_LOCK_NAMESPACE, user_id])


def explanations_store_and_ready(
    explanations: list[Explanation], *, item_ids: list[int], now: datetime
) -> None:
    """PostgreSQL: insert the explanations and move their waiting items on, in one
    statement (atomic by itself: no BEGIN and COMMIT round trips), bound on the server.

    The guarded update (``explanation_status = 'pending'``) makes a second run a no-op.
    """
    insert, insert_params = explanations_insert_sql(explanations, now=now)
    sql = (
        f"WITH stored AS ({insert}) "  # noqa: S608
        f"UPDATE {_items_table()} SET explanation_status = %s, "
        f"explanation_error = '', updated_at = %s, "
        f"status = CASE WHEN status = %s THEN %s ELSE status END "
        f"WHERE id = ANY(%s) AND explanation_status = %s"
    )
    # Plain strings: psycopg would send an Enum member's name, not its value.
    ready, pending = str(ExplanationStatus.READY.value), str(ExplanationStatus.PENDING.value)
    item_pending, item_ready = str(ItemStatus.PENDING.value), str(ItemStatus.READY.value)
    params: list[Any] = [*insert_params, ready, now, item_pending, item_ready, item_ids, pending]
    with server_binding_cursor() as cursor:
        cursor.execute(sql, params)
