"""The reviews app's raw SQL, in one place: the item join, the claim, the lease
settlement, the per-reviewer claim lock, and the explanation store's item move.

The claim and decide path reads an item with its prediction, model version, queue and
explanation on every request. ``ItemJoin`` writes that join once per process (the
same columns Django's ``select_related`` would fetch) and builds the model instances
from the rows with the fields' own converters, so a request does not pay for
compiling the same ORM query again, and the claim can fetch the item it leases in
the statement that leases it (``ItemJoin.select_sql`` over a CTE). The join also reads
the item's latest return from escalation (``ItemReturn``: the manager's comment for the
next reviewer), so the claim shows it without another statement.

Each statement is written once for both databases where it can be; what only
PostgreSQL can run (data-modifying CTEs, advisory locks, arrays, server-side binding)
is behind ``apps.core.db.on_postgresql``, and SQLite, the embedded default, takes the
plain form. Only identifiers from the models' own metadata are formatted into SQL;
every value is bound.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from django.db import connection
from django.db.models import Model

from apps.core.db import on_postgresql, server_binding_cursor, sql_in
from apps.explanations.models import Explanation
from apps.explanations.sql import explanations_insert_sql
from apps.queues.models import Queue
from apps.registry.models import ModelVersion

from .models import Escalation, EscalationStatus, ExplanationStatus, ItemStatus, ReviewItem

CLAIM_LOCK_NAMESPACE = 0x636C61  # "cla": per-reviewer claim locks

# The item's prediction model, reached through the item's own relation: the predictions
# app sits above this one (its intake creates items) and is not imported here.
Prediction = ReviewItem._meta.get_field("prediction").related_model
# The prediction's reverse one-to-one to its explanation (whose cache the join fills).
_EXPLANATION_OF_PREDICTION: Any = Explanation._meta.get_field("prediction").remote_field

# (model, alias) of the join; the item first.
_JOINED: tuple[tuple[type[Model], str], ...] = (
    (ReviewItem, "i"),
    (Prediction, "p"),
    (ModelVersion, "mv"),
    (Queue, "q"),
    (Explanation, "e"),
)


# An item's latest returned escalation, as the join reads it: id (null when the item was
# never returned), when, and the manager's comment. Who returned it is not read:
# reviewers are not told.
_RETURN_FIELDS = ("id", "closed_at", "closing_comment")
# Where the join leaves the item's return on the instance
# (``selectors.review_item_return`` reads it).
RETURN_CACHE = "_review_item_return"


@dataclass(frozen=True)
class ItemReturn:
    """The last time an escalation manager sent the item back to the review queue, and
    what they wrote for its next reviewer (empty when they wrote nothing)."""

    comment: str
    returned_at: datetime


class ItemJoin:
    """The item-with-everything-it-shows join, as SQL and as a row loader."""

    def __init__(self) -> None:
        qn = connection.ops.quote_name
        self.columns: list[str] = []
        # Per model: (model, first column index, attnames, per column its converters,
        # each with the column expression it is called with, as the compiler does).
        self.parts: list[tuple[type[Model], int, list[str], list[list[tuple[Callable, Any]]]]] = []
        for model, alias in _JOINED:
            fields = model._meta.concrete_fields
            converters = []
            for f in fields:
                col = f.get_col(alias)
                functions = [
                    *connection.ops.get_db_converters(col),
                    *f.get_db_converters(connection),
                ]
                converters.append([(function, col) for function in functions])
            self.parts.append((model, len(self.columns), [f.attname for f in fields], converters))
            self.columns += [f"{alias}.{qn(str(f.column))}" for f in fields]
        # The latest returned escalation's columns follow the models' (alias r).
        self.return_start = len(self.columns)
        self.return_converters: list[list[tuple[Callable, Any]]] = []
        escalation_fields = {f.attname: f for f in Escalation._meta.concrete_fields}
        for name in _RETURN_FIELDS:
            field = escalation_fields[name]
            col = field.get_col("r")
            functions = [
                *connection.ops.get_db_converters(col),
                *field.get_db_converters(connection),
            ]
            self.return_converters.append([(function, col) for function in functions])
            self.columns.append(f"r.{qn(str(field.column))}")
        tables = {model: qn(model._meta.db_table) for model, _ in _JOINED}
        escalations = qn(Escalation._meta.db_table)
        # One row per item at most: the join is on the latest returned escalation's id
        # (the item_id index serves the subquery; an item has few escalations). The
        # status is the model's constant, not a value from outside.
        self.joins = (
            f"JOIN {tables[Prediction]} p ON p.id = i.prediction_id "  # noqa: S608
            f"JOIN {tables[ModelVersion]} mv ON mv.id = p.model_version_id "
            f"JOIN {tables[Queue]} q ON q.id = i.queue_id "
            f"LEFT JOIN {tables[Explanation]} e ON e.prediction_id = p.id "
            f"LEFT JOIN {escalations} r ON r.id = (SELECT x.id FROM {escalations} x "
            f"WHERE x.item_id = i.id AND x.status = '{EscalationStatus.RETURNED.value}' "
            f"AND x.closed_at IS NOT NULL ORDER BY x.id DESC LIMIT 1)"
        )
        self.item_table = tables[ReviewItem]

    def select_sql(self, source: str) -> str:
        """``SELECT <every column> FROM <source> i JOIN ...``; ``source`` is the item
        table or a CTE with the item table's columns."""
        return f"SELECT {', '.join(self.columns)} FROM {source} i {self.joins}"  # noqa: S608

    def load(self, row: Sequence[Any]) -> ReviewItem:
        """The item of one row, its prediction, model version, queue and explanation
        attached as ``select_related`` would attach them, and its latest return
        (``review_item_return`` answers it without a query)."""
        objects: list[Any] = []
        for model, start, attnames, converters in self.parts:
            values = list(row[start : start + len(attnames)])
            for n, convert in enumerate(converters):
                for function, col in convert:
                    values[n] = function(values[n], col, connection)
            if values[0] is None:  # the explanation's LEFT JOIN found none
                objects.append(None)
            else:
                objects.append(model.from_db(connection.alias, attnames, values))
        item, prediction, model_version, queue, explanation = objects
        prediction.model_version = model_version
        # The reverse one-to-one's cache: None means "no explanation", not "not loaded".
        _EXPLANATION_OF_PREDICTION.set_cached_value(prediction, explanation)
        if explanation is not None:
            explanation.prediction = prediction
        item.prediction = prediction
        item.queue = queue
        returned = list(row[self.return_start : self.return_start + len(_RETURN_FIELDS)])
        for n, convert in enumerate(self.return_converters):
            for function, col in convert:
                returned[n] = function(returned[n], col, connection)
        escalation_id, returned_at, comment = returned
        item.__dict__[RETURN_CACHE] = (
            None if escalation_id is None else ItemReturn(comment=comment, returned_at=returned_at)
        )
        return item


@cache
def item_join(vendor: str) -> ItemJoin:
    """The join for this database vendor, built on first use."""
    return ItemJoin()


def _item_joined(where: str, params: Sequence[Any]) -> ReviewItem | None:
    join = item_join(connection.vendor)
    with connection.cursor() as cursor:
        cursor.execute(f"{join.select_sql(join.item_table)} WHERE {where}", params)
        row = cursor.fetchone()
    return None if row is None else join.load(row)


def item_joined_by_id(*, item_id: int, scope: frozenset[int] | None) -> ReviewItem | None:
    """The joined item ``item_id`` if it lies in ``scope`` (queue ids; None: any)."""
    in_queues, queue_ids = sql_in("i.queue_id", scope)
    return _item_joined(f"i.id = %s AND {in_queues}", [item_id, *queue_ids])


def item_joined_held_by(*, user_id: int, now: datetime) -> ReviewItem | None:
    """The joined item under the user's live lease; at most one row matches (the partial
    unique index ``reviewitem_one_lease_per_reviewer`` serves it), so no ORDER BY."""
    return _item_joined(
        "i.leased_by_id = %s AND i.status = %s AND i.lease_expires_at > %s",
        [user_id, ItemStatus.LEASED.value, connection.ops.adapt_datetimefield_value(now)],
    )


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
