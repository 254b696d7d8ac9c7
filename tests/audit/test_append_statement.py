"""The one-statement append (``audit_append_events``, PostgreSQL) chains exactly as
``apps/audit/chain.py`` says, for any content, in one round trip."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from apps.audit.chain import stored_event_hash
from apps.audit.models import Action, AuditEvent
from apps.audit.selectors import audit_chain_verify
from apps.audit.services import Event, audit_append
from tests.factories import make_user

T0 = datetime(2026, 3, 2, 9, 0, 0, 123456, tzinfo=UTC)

AWKWARD_DATA = [
    {},
    {"b": 1, "a": [1.5, 0.1, 1e-300, -7, 12345678901234567890], "c": None},
    {"text": "naïve café — 漢字 🙂", "quote": 'he said "no"\\', "ctl": "tab\tnewline\n"},
    {"nested": {"z": {"y": [True, False, {"x": "ÿ"}]}, "a": []}, "": "empty key"},
    {"unicode_key_é": 1, "UPPER": 2, "lower": 3, "10": 4, "9": 5},
]


@pytest.mark.django_db
def test_events_appended_in_sql_carry_the_hash_chain_py_computes():
    # given events whose data is awkward to encode (Unicode, escapes, key order, floats)
    user = make_user("ünïcode-user")
    events = [
        Event(Action.DENIED, user if i % 2 else None, i or None, 1000 + i, data)
        for i, data in enumerate(AWKWARD_DATA)
    ]
    # when they are appended, in two appends, inside transactions
    with transaction.atomic():
        audit_append(events=events[:2], at=T0)
    with transaction.atomic():
        audit_append(events=events[2:], at=T0 + timedelta(seconds=1))
    # then each stored event's hash is chain.py's hash of its stored content and its
    # predecessor, and the chain verifies end to end
    stored = list(AuditEvent.objects.order_by("id"))
    assert [e.data for e in stored] == AWKWARD_DATA
    assert [e.actor for e in stored] == ["", user.username] * 2 + [""]
    for before, event in zip([None, *stored], stored, strict=False):
        if before is not None:
            assert event.prev_hash == before.hash
        assert event.hash == stored_event_hash(event)
    assert stored[0].at == T0
    assert audit_chain_verify() == (len(AWKWARD_DATA), None)


@pytest.mark.django_db
def test_an_append_is_one_statement_on_postgresql():
    # given a user and a transaction
    user = make_user("counted")
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        # when three events are appended
        audit_append(events=[Event(Action.DENIED, user, data={"i": i}) for i in range(3)], at=T0)
    # then one statement did it (lock, last hash and insert inside the function)
    statements = [q["sql"] for q in queries.captured_queries]
    assert connection.vendor == "postgresql"
    assert len([s for s in statements if "audit" in s]) == 1
    assert AuditEvent.objects.count() == 3
    assert audit_chain_verify() == (3, None)
