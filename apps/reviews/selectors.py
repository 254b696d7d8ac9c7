"""Reads of review items and escalations, scoped to the caller's queues.

The claim and decide path reads an item with its prediction, model version, queue and
explanation on every request. ``ItemJoin`` writes that join once per process (the
same columns Django's ``select_related`` would fetch) and builds the model instances
from the rows with the fields' own converters, so a request does not pay for
compiling the same ORM query again, and the claim can fetch the item it leases in
the statement that leases it (``ItemJoin.select_sql`` over a CTE). The join also reads
the item's latest return from escalation (``ItemReturn``: the manager's comment for the
next reviewer), so the claim shows it without another statement.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from django.db import connection
from django.db.models import Model, QuerySet

from apps.core.db import sql_in
from apps.explanations.models import Explanation
from apps.queues.models import Queue
from apps.queues.scope import in_scope, queue_scope
from apps.registry.models import ModelVersion

from .models import Escalation, EscalationStatus, ItemStatus, ReviewItem

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
# Where the join leaves the item's return on the instance (see ``review_item_return``).
_RETURN_CACHE = "_review_item_return"


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
        item.__dict__[_RETURN_CACHE] = (
            None if escalation_id is None else ItemReturn(comment=comment, returned_at=returned_at)
        )
        return item


@cache
def item_join(vendor: str) -> ItemJoin:
    """The join for this database vendor, built on first use."""
    return ItemJoin()


def review_item_for_output(*, item_id: int) -> ReviewItem:
    """The item with everything its output shows; ``DoesNotExist`` if there is none."""
    item = review_item_in_scope(item_id=item_id, scope=None)
    if item is None:
        raise ReviewItem.DoesNotExist(f"No review item {item_id}.")
    return item


def review_item_in_scope(*, item_id: int, scope: frozenset[int] | None) -> ReviewItem | None:
    """The item with everything its output shows, if it lies in ``scope`` (a set of
    queue ids; None: any queue); None otherwise. One statement."""
    join = item_join(connection.vendor)
    in_queues, queue_ids = sql_in("i.queue_id", scope)
    sql = join.select_sql(join.item_table) + f" WHERE i.id = %s AND {in_queues}"
    params: list[Any] = [item_id, *queue_ids]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else join.load(row)


def review_item_held_by(*, user, now: datetime) -> ReviewItem | None:
    """The item the caller holds a live lease on, with everything its output shows;
    None if they hold none. One statement; at most one row matches (the partial
    unique index ``reviewitem_one_lease_per_reviewer`` serves it), so no ORDER BY."""
    join = item_join(connection.vendor)
    sql = join.select_sql(join.item_table) + (
        " WHERE i.leased_by_id = %s AND i.status = %s AND i.lease_expires_at > %s"
    )
    params = [user.id, ItemStatus.LEASED.value, connection.ops.adapt_datetimefield_value(now)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else join.load(row)


def review_item_return(*, item: ReviewItem) -> ItemReturn | None:
    """The item's latest return from escalation (the manager's comment for its next
    reviewer); None if it was never returned. Free for an item the join loaded; one
    query for an item the ORM loaded."""
    if _RETURN_CACHE in item.__dict__:
        return item.__dict__[_RETURN_CACHE]
    latest = (
        Escalation.objects.filter(
            item_id=item.id, status=EscalationStatus.RETURNED, closed_at__isnull=False
        )
        .order_by("-id")
        .values_list("closing_comment", "closed_at")
        .first()
    )
    found = None
    if latest is not None and latest[1] is not None:
        found = ItemReturn(comment=latest[0], returned_at=latest[1])
    item.__dict__[_RETURN_CACHE] = found
    return found


def review_item_visible_to(*, user, item_id: int) -> ReviewItem | None:
    """The item, if it lies in the caller's queues; None otherwise."""
    if not 0 < item_id < 2**63:
        return None
    return review_item_in_scope(item_id=item_id, scope=queue_scope(user))


def escalation_list(*, user, status: str | None = None) -> QuerySet[Escalation]:
    qs = Escalation.objects.select_related(
        "item__prediction__model_version",
        "item__prediction__explanation",
        "item__queue",
        "raised_by",
    ).filter(in_scope(user, "item__queue_id"))
    if status is not None:
        qs = qs.filter(status=status)
    return qs


ESCALATION_STATUSES = EscalationStatus.values
