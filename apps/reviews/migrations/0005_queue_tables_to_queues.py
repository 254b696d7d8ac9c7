"""Queues and memberships move to the queues app (step 1 of 2): their tables are
renamed to the new owner's names; the model state moves in queues 0001."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("reviews", "0004_decision_txid"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.AlterModelTable(name="queue", table="queues_queue"),
                migrations.AlterModelTable(name="queuemembership", table="queues_queuemembership"),
            ],
        ),
    ]
