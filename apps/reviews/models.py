"""The items waiting in review queues, their decisions and escalations.

Invariants, each held by the database:
- A routed prediction has exactly one review item (a unique one-to-one).
- An item is ``leased`` exactly when it carries a lease (token, holder, expiry): one
  live lease per item, by construction and by check constraint.
- A reviewer holds at most one leased item (partial unique index).
- An item is decided at most once (a unique one-to-one from Decision).
- An item has at most one open or claimed escalation (partial unique index).
PostgreSQL holds all state; Celery messages only hint that work is waiting.
"""

from django.conf import settings
from django.db import models

# The longest comment a person may write on an item (decide, escalate, resolve, return):
# the services refuse a longer one; the API's fields and the screens' inputs declare it.
MAX_COMMENT = 5000


class ItemStatus(models.TextChoices):
    PENDING = "pending", "Waiting for its explanation"
    READY = "ready", "Ready to claim"
    LEASED = "leased", "Claimed by a reviewer"
    ESCALATED = "escalated", "Escalated"
    DECIDED = "decided", "Decided"


class ExplanationStatus(models.TextChoices):
    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"


class ReviewItem(models.Model):
    prediction = models.OneToOneField(
        "predictions.Prediction", on_delete=models.PROTECT, related_name="review_item"
    )
    queue = models.ForeignKey("queues.Queue", on_delete=models.PROTECT, related_name="items")
    status = models.CharField(max_length=16, choices=ItemStatus.choices, default=ItemStatus.PENDING)
    reasons = models.JSONField(default=list)
    # Higher is riskier; breaks ties between items due at the same time.
    priority = models.FloatField(default=0.0)
    due_at = models.DateTimeField()
    explanation_status = models.CharField(
        max_length=16, choices=ExplanationStatus.choices, default=ExplanationStatus.PENDING
    )
    # Why the explanation failed, once retries ran out (the item is claimable anyway).
    explanation_error = models.TextField(blank=True)
    # When the sweeper last re-sent the explanation work (null: only intake sent it).
    explanation_requested_at = models.DateTimeField(null=True)
    leased_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    lease_token = models.UUIDField(null=True)
    lease_expires_at = models.DateTimeField(null=True)
    # Leases that ran out without a decision; at REVIEW_MAX_LEASE_EXPIRIES the item is
    # escalated (repeated_abandonment) instead of going back to the queue.
    lease_expiries = models.PositiveIntegerField(default=0)
    # Set when the SLA breach was escalated, so a returned item is not escalated again.
    sla_breached_at = models.DateTimeField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["due_at", "-priority", "id"]
        indexes = [
            models.Index(
                fields=["created_at"],
                name="reviewitem_unexplained_idx",
                condition=models.Q(explanation_status="pending"),
            ),
            # The claim's ORDER BY, over exactly the claimable rows.
            models.Index(
                "due_at",
                models.F("priority").desc(),
                "id",
                name="reviewitem_claim_idx",
                condition=models.Q(status="ready"),
            ),
            models.Index(
                fields=["lease_expires_at"],
                name="reviewitem_lease_expiry_idx",
                condition=models.Q(status="leased"),
            ),
            models.Index(
                fields=["due_at"],
                name="reviewitem_open_due_idx",
                condition=models.Q(
                    status__in=["pending", "ready", "leased"], sla_breached_at__isnull=True
                ),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(
                        status="leased",
                        lease_token__isnull=False,
                        leased_by__isnull=False,
                        lease_expires_at__isnull=False,
                    )
                    | (
                        ~models.Q(status="leased")
                        & models.Q(
                            lease_token__isnull=True,
                            leased_by__isnull=True,
                            lease_expires_at__isnull=True,
                        )
                    )
                ),
                name="reviewitem_leased_iff_lease",
            ),
            models.UniqueConstraint(
                fields=["leased_by"],
                condition=models.Q(status="leased"),
                name="reviewitem_one_lease_per_reviewer",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=ItemStatus.values), name="reviewitem_status_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(explanation_status__in=ExplanationStatus.values),
                name="reviewitem_explanation_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"item {self.id} ({self.status})"


class DecisionSource(models.TextChoices):
    REVIEWER = "reviewer"
    ESCALATION = "escalation"


class Decision(models.Model):
    """The final human decision on an item: one per item, never changed."""

    item = models.OneToOneField(ReviewItem, on_delete=models.PROTECT, related_name="decision")
    label = models.CharField(max_length=200)
    source = models.CharField(max_length=16, choices=DecisionSource.choices)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    overridden = models.BooleanField()
    reason_code = models.CharField(max_length=64, blank=True)
    comment = models.TextField(blank=True)
    decided_at = models.DateTimeField()
    txid = models.BigIntegerField(
        default=0,
        help_text="The deciding transaction's id: the label feed's order (see docs/labels.md).",
    )

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["txid", "id"], name="decision_feed_idx")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(source__in=DecisionSource.values),
                name="decision_source_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"decision {self.id} on item {self.item_id}: {self.label}"


class EscalationStatus(models.TextChoices):
    OPEN = "open"
    CLAIMED = "claimed"
    RESOLVED = "resolved"
    RETURNED = "returned"


ACTIVE_ESCALATION = [EscalationStatus.OPEN, EscalationStatus.CLAIMED]


class Escalation(models.Model):
    """A problem case handed to escalation managers, by a reviewer or by the system."""

    item = models.ForeignKey(ReviewItem, on_delete=models.PROTECT, related_name="escalations")
    reason = models.CharField(max_length=64)
    comment = models.TextField(blank=True)
    # Null when the system raised it (sla_breach, repeated_abandonment).
    raised_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    raised_at = models.DateTimeField()
    # How far past the item's SLA due time it was when raised (0 when it was not late).
    lateness_seconds = models.FloatField(default=0.0)
    status = models.CharField(
        max_length=16, choices=EscalationStatus.choices, default=EscalationStatus.OPEN
    )
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    lease_token = models.UUIDField(null=True)
    lease_expires_at = models.DateTimeField(null=True)
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    closed_at = models.DateTimeField(null=True)
    closing_comment = models.TextField(blank=True)

    class Meta:
        ordering = ["raised_at", "id"]
        indexes = [
            models.Index(
                fields=["raised_at", "id"],
                name="escalation_active_idx",
                condition=models.Q(status__in=["open", "claimed"]),
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["item"],
                condition=models.Q(status__in=["open", "claimed"]),
                name="escalation_one_active_per_item",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=EscalationStatus.values),
                name="escalation_status_valid",
            ),
            models.CheckConstraint(
                condition=(
                    models.Q(
                        status="claimed",
                        lease_token__isnull=False,
                        claimed_by__isnull=False,
                        lease_expires_at__isnull=False,
                    )
                    | (~models.Q(status="claimed") & models.Q(lease_token__isnull=True))
                ),
                name="escalation_claimed_iff_lease",
            ),
        ]

    def __str__(self) -> str:
        return f"escalation {self.id} of item {self.item_id} ({self.status})"
