"""Make the audit table append-only: the database refuses UPDATE and DELETE.

TRUNCATE stays possible for the table's owner (test databases are flushed with it);
the chain check in ``manage.py audit_verify`` catches any rewrite that bypasses this.
"""

from django.db import migrations

POSTGRES_UP = """
CREATE FUNCTION audit_event_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_auditevent
    FOR EACH ROW EXECUTE FUNCTION audit_event_refuse_change();
"""
POSTGRES_DOWN = """
DROP TRIGGER audit_event_append_only ON audit_auditevent;
DROP FUNCTION audit_event_refuse_change();
"""
SQLITE_UP = [
    """CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_auditevent
       BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END""",
    """CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON audit_auditevent
       BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END""",
]
SQLITE_DOWN = ["DROP TRIGGER audit_event_no_update", "DROP TRIGGER audit_event_no_delete"]


def forwards(apps, schema_editor):
    statements = {"postgresql": [POSTGRES_UP], "sqlite": SQLITE_UP}
    for sql in statements.get(schema_editor.connection.vendor, []):
        schema_editor.execute(sql, None)


def backwards(apps, schema_editor):
    statements = {"postgresql": [POSTGRES_DOWN], "sqlite": SQLITE_DOWN}
    for sql in statements.get(schema_editor.connection.vendor, []):
        schema_editor.execute(sql, None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]

    operations = [migrations.RunPython(forwards, backwards)]
