"""Append audit events in one statement (PostgreSQL only).

``audit_append_events(lock_key, events)`` takes the audit lock (a transaction-scoped
advisory lock, held to commit), reads the hash of the last event and inserts the
events, chaining each onto its predecessor. Before it, an append cost three round
trips while the lock was held (lock, last hash, insert); now one.

The hash stays the one ``apps/audit/chain.py`` defines: the SHA-256 of the canonical
JSON array ``[prev_hash, at, actor_id, actor, action, item_id, prediction_id, data]``.
The caller, who alone knows how Python encodes the content, sends each event's
encoding without its first element (``tail``: everything after ``[``); ``prev_hash``
is 64 hex digits, which JSON writes as they are, so the function completes the text
as ``'["' || prev_hash || '",' || tail`` and hashes its UTF-8 bytes. The function
reads the predecessor only after the lock is granted (a new snapshot per statement in
a VOLATILE function under READ COMMITTED), so two appends never chain onto the same
event. SQLite keeps the Python path in ``apps/audit/services.py``.
"""

from django.db import migrations

POSTGRES_UP = """
CREATE FUNCTION audit_append_events(lock_key bigint, events jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    prev text;
    digest text;
    event jsonb;
    prevs text[] := '{}';
    hashes text[] := '{}';
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    SELECT e.hash INTO prev FROM audit_auditevent e ORDER BY e.id DESC LIMIT 1;
    prev := coalesce(prev, repeat('0', 64));
    FOR event IN SELECT value FROM jsonb_array_elements(events) LOOP
        digest := encode(
            sha256(convert_to('["' || prev || '",' || (event ->> 'tail'), 'UTF8')), 'hex'
        );
        prevs := prevs || prev;
        hashes := hashes || digest;
        prev := digest;
    END LOOP;
    INSERT INTO audit_auditevent
        (at, actor_id, actor, action, item_id, prediction_id, data, prev_hash, hash)
    SELECT (e.value ->> 'at')::timestamptz, (e.value ->> 'actor_id')::bigint,
           e.value ->> 'actor', e.value ->> 'action', (e.value ->> 'item_id')::bigint,
           (e.value ->> 'prediction_id')::bigint, e.value -> 'data',
           prevs[e.n], hashes[e.n]
    FROM jsonb_array_elements(events) WITH ORDINALITY AS e(value, n)
    ORDER BY e.n;
END $$;
"""
POSTGRES_DOWN = "DROP FUNCTION audit_append_events(bigint, jsonb);"


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_UP, None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_DOWN, None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_append_only")]

    operations = [migrations.RunPython(forwards, backwards)]
