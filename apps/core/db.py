"""Database expressions shared by several apps."""

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
