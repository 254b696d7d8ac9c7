"""Review queues and the items waiting in them.

A routed prediction has exactly one review item (a unique one-to-one). An item is
claimable once its explanation work is done (``status = ready``); PostgreSQL holds
that state, Celery messages only hint that work is waiting.
"""

from django.conf import settings
from django.db import models


class Queue(models.Model):
    name = models.CharField(max_length=100, unique=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="QueueMembership", related_name="review_queues"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class QueueMembership(models.Model):
    queue = models.ForeignKey(Queue, on_delete=models.CASCADE)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["queue", "user"], name="queuemembership_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.queue_id}"


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
    queue = models.ForeignKey(Queue, on_delete=models.PROTECT, related_name="items")
    status = models.CharField(max_length=16, choices=ItemStatus.choices, default=ItemStatus.PENDING)
    reasons = models.JSONField(default=list)
    # Higher is riskier; breaks ties between items due at the same time.
    priority = models.FloatField(default=0.0)
    due_at = models.DateTimeField()
    explanation_status = models.CharField(
        max_length=16, choices=ExplanationStatus.choices, default=ExplanationStatus.PENDING
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["due_at", "-priority", "id"]
        indexes = [
            models.Index(
                fields=["status", "created_at"],
                name="reviewitem_pending_idx",
                condition=models.Q(status="pending"),
            ),
        ]
        constraints = [
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
