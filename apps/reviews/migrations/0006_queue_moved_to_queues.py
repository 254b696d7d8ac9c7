"""Queues and memberships move to the queues app (step 2 of 2): items point at the
queues app's Queue, and the reviews app forgets its own (state only: same tables)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("reviews", "0005_queue_tables_to_queues"),
        ("queues", "0001_initial"),
        ("registry", "0004_queue_in_queues_app"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="reviewitem",
                    name="queue",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="items",
                        to="queues.queue",
                    ),
                ),
                migrations.RemoveField(model_name="queue", name="members"),
                migrations.DeleteModel(name="QueueMembership"),
                migrations.DeleteModel(name="Queue"),
            ],
        ),
    ]
