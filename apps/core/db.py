"""Database helpers shared by the apps' raw SQL: the vendor test, a server-binding
cursor, an ``IN`` list, the writing transaction's id."""

from collections.abc import Collection
from typing import Any

from django.db import connection
from django.db.models import BigIntegerField, Func


class CurrentTransactionId(Func):
    """The id of the writing transaction: ``pg_current_xact_id()`` on PostgreSQL.

    Every row a transaction writes with it carries the same number, and a transaction
    is finished (committed or rolled back) once its id is below the ``xmin`` of a later
    snapshot. SQLite runs one writer at a time, so there it is 0 and row ids alone give
    commit order.
    """

    output_field = BigIntegerField()

    def as_sql(self, compiler, connection, **extra_context):
        return "0", []

    def as_postgresql(self, compiler, connection, **extra_context):
        return "pg_current_xact_id()::text::bigint", []


def on_postgresql() -> bool:
    """Whether the default connection is PostgreSQL (else SQLite, the embedded default).

    Raw SQL that only PostgreSQL can run (data-modifying CTEs, arrays, advisory locks,
    transaction ids) branches on this; the ORM paths run on both.
    """
    return connection.vendor == "postgresql"


def server_binding_cursor() -> Any:
    """A Django cursor on PostgreSQL that sends parameters apart from the statement.

    Django's cursors bind on the client: a megabyte of JSON would be escaped into the
    SQL text and lexed back out by the server, which costs more than parsing it.
    Wrapped as Django wraps its own cursors, so query logging, ``assertNumQueries`` and
    execute wrappers see the statement. Statements are not prepared (Django's
    connections have ``prepare_threshold`` None).
    """
    from django.db.backends.postgresql.base import ServerBindingCursor

    connection.ensure_connection()
    raw = ServerBindingCursor(connection.connection)  # type: ignore[call-arg]
    if connection.queries_logged:
        return connection.make_debug_cursor(raw)  # type: ignore[arg-type]
    return connection.make_cursor(raw)  # type: ignore[arg-type]


def sql_in(column: str, values: Collection[int] | None) -> tuple[str, list[int]]:
    """``<column> IN (%s, ...)`` and its parameters (sorted), for a queue scope and the
    like in raw SQL. None means every row (``TRUE``); an empty set matches none."""
    if values is None:
        return "TRUE", []
    if not values:
        return f"{column} IN (NULL)", []
    return f"{column} IN ({', '.join(['%s'] * len(values))})", sorted(values)
