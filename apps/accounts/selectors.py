"""Reads of accounts: the caller behind an API token."""

from functools import cache

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from rest_framework.authtoken.models import Token

from apps.queues.models import QueueMembership
from apps.queues.scope import scope_remember

from .roles import roles_remember


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
