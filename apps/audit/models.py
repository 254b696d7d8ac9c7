"""The audit trail: an append-only hash chain of every state change.

Invariants:
- Events are appended in the transaction that makes the change, so an event exists
  exactly when its change committed.
- Each event stores the hash of its predecessor (``prev_hash``) and its own ``hash``
  over its content and ``prev_hash``. Appends take one database-wide lock (a PostgreSQL
  advisory lock held to commit), so two writers never chain onto the same predecessor:
  the chain cannot fork, and id order is chain order.
- PostgreSQL refuses UPDATE and DELETE on the table (a trigger, see the migration).
References to other rows are plain integers, not foreign keys: nothing that happens to
the rest of the schema may cascade into the trail.
"""

from django.db import models


class Action(models.TextChoices):
    ITEM_CREATED = "item_created"
    CLAIMED = "claimed"
    LEASE_EXPIRED = "lease_expired"
    RELEASED = "released"
    DECIDED = "decided"
    OVERRIDDEN = "overridden"
    ESCALATED = "escalated"
    ESCALATION_CLAIMED = "escalation_claimed"
    ESCALATION_RESOLVED = "escalation_resolved"
    ESCALATION_RETURNED = "escalation_returned"
    ESCALATION_LEASE_EXPIRED = "escalation_lease_expired"
    DENIED = "denied"


class AuditEvent(models.Model):
    at = models.DateTimeField()
    actor_id = models.BigIntegerField(null=True)
    actor = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=32, choices=Action.choices)
    item_id = models.BigIntegerField(null=True)
    prediction_id = models.BigIntegerField(null=True)
    data = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["item_id", "id"], name="auditevent_item_idx")]

    def __str__(self) -> str:
        return f"{self.id} {self.action} by {self.actor or 'system'}"
