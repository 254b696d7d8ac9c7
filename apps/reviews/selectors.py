"""Reads of review items and escalations, scoped to the caller's queues.

The claim and decide path reads an item with its prediction, model version, queue and
explanation on every request. ``ItemJoin`` writes that join once per process (the
same columns Django's ``select_related`` would fetch) and builds the model instances
from the rows with the fields' own converters, so a request does not pay for
compiling the same ORM query again, and the claim can fetch the item it leases in
the statement that leases it (``ItemJoin.select_sql`` over a CTE).
"""

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from django.db.models import Model, QuerySet
from rest_framework.authtoken.models import Token

from apps.accounts.roles import roles_remember
from apps.explanations.models import Explanation
from apps.predictions.models import Prediction
from apps.registry.models import ModelVersion

from .models import Escalation, EscalationStatus, Queue, QueueMembership, ReviewItem
from .scope import in_scope, queue_scope, scope_remember

# (model, alias) of the join; the item first.
_JOINED: tuple[tuple[type[Model], str], ...] = (
    (ReviewItem, "i"),
    (Prediction, "p"),
    (ModelVersion, "mv"),
    (Queue, "q"),
    (Explanation, "e"),
)


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
        tables = {model: qn(model._meta.db_table) for model, _ in _JOINED}
        self.joins = (
            f"JOIN {tables[Prediction]} p ON p.id = i.prediction_id "
            f"JOIN {tables[ModelVersion]} mv ON mv.id = p.model_version_id "
            f"JOIN {tables[Queue]} q ON q.id = i.queue_id "
            f"LEFT JOIN {tables[Explanation]} e ON e.prediction_id = p.id"
        )
        self.item_table = tables[ReviewItem]

    def select_sql(self, source: str) -> str:
        """``SELECT <every column> FROM <source> i JOIN ...``; ``source`` is the item
        table or a CTE with the item table's columns."""
        return f"SELECT {', '.join(self.columns)} FROM {source} i {self.joins}"  # noqa: S608

    def load(self, row: Sequence[Any]) -> ReviewItem:
        """The item of one row, its prediction, model version, queue and explanation
        attached as ``select_related`` would attach them."""
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
        Prediction.explanation.related.set_cached_value(prediction, explanation)
        if explanation is not None:
            explanation.prediction = prediction
        item.prediction = prediction
        item.queue = queue
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
    sql = join.select_sql(join.item_table) + " WHERE i.id = %s"
    params: list[Any] = [item_id]
    if scope is not None:
        sql += f" AND i.queue_id IN ({', '.join(['%s'] * len(scope))})"
        params += sorted(scope)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else join.load(row)


def review_item_visible_to(*, user, item_id: int) -> ReviewItem | None:
    """The item, if it lies in the caller's queues; None otherwise."""
    if not 0 < item_id < 2**63:
        return None
    return review_item_in_scope(item_id=item_id, scope=queue_scope(user))


@cache
def _caller_sql(vendor: str) -> tuple[str, list[str], list[str]]:
    qn = connection.ops.quote_name
    User = get_user_model()
    user_fields = [f.attname for f in User._meta.concrete_fields]
    token_fields = [f.attname for f in Token._meta.concrete_fields]
    groups = User.groups.through._meta.db_table
    sql = (
        f"SELECT {', '.join(f'u.{qn(f)}' for f in user_fields)}, "  # noqa: S608
        f"{', '.join(f't.{qn(f)}' for f in token_fields)}, "
        f"ARRAY(SELECT g.name FROM {qn(groups)} ug JOIN {qn(Group._meta.db_table)} g "
        f"ON g.id = ug.group_id WHERE ug.user_id = u.id), "
        f"ARRAY(SELECT m.queue_id FROM {qn(QueueMembership._meta.db_table)} m "
        f"WHERE m.user_id = u.id) "
        f"FROM {qn(Token._meta.db_table)} t JOIN {qn(User._meta.db_table)} u ON u.id = t.user_id "
        f"WHERE t.key = %s"
    )
    return sql, user_fields, token_fields


def caller_by_token(*, key: str) -> Token | None:
    """The API token ``key`` with its user, the user's roles and queues read in the same
    statement and cached on the user (``user_roles``, ``queue_scope``); None if no
    token has that key. PostgreSQL only (arrays)."""
    sql, user_fields, token_fields = _caller_sql(connection.vendor)
    with connection.cursor() as cursor:
        cursor.execute(sql, [key])
        row = cursor.fetchone()
    if row is None:
        return None
    n = len(user_fields)
    user = get_user_model().from_db(connection.alias, user_fields, row[:n])
    token = Token.from_db(connection.alias, token_fields, row[n : n + len(token_fields)])
    token.user = user
    group_names, queue_ids = row[-2], row[-1]
    roles_remember(user, group_names)
    scope_remember(user, queue_ids)
    return token


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
