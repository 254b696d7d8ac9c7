"""Webhook subscriptions and the outbox of their deliveries.

Invariants:
- A delivery row is inserted in the same transaction as the decision or escalation it
  reports (an outbox): if the change commits, the delivery exists; if it rolls back,
  no receiver hears of it. Celery messages only say that a delivery may be due.
- A delivery ends ``delivered`` or ``failed`` and never leaves either state: every
  move is a compare-and-set on ``status = 'pending'`` (and the claimed attempt number).
- One attempt at a time: an attempt first claims the row (``locked_until`` in the
  future, ``attempts`` incremented) under ``FOR UPDATE SKIP LOCKED``; a second task for
  the same delivery finds nothing to claim and sends nothing.
- Every attempt is logged (``WebhookAttempt``), one row per attempt number.
"""

import uuid

from django.conf import settings
from django.db import models


class WebhookEvent(models.TextChoices):
    PREDICTION_DECIDED = "prediction.decided", "prediction.decided: a final human decision"
    ITEM_ESCALATED = "item.escalated", "item.escalated: an item handed to escalation managers"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookSubscription(models.Model):
    """A receiver URL and the events it wants, managed by admins."""

    name = models.CharField(max_length=100, help_text="Who receives this, for the admins.")
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list, help_text="Event names this subscription receives.")
    # The HMAC key. It must be readable to sign, so it is stored as is; the admin shows
    # it once, when it is generated.
    secret = models.CharField(max_length=128)
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(
                fields=["id"], name="webhooksub_active_idx", condition=models.Q(active=True)
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.url})"


class WebhookDelivery(models.Model):
    """One event for one subscription: the outbox row and its delivery state."""

    delivery_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    subscription = models.ForeignKey(
        WebhookSubscription, on_delete=models.CASCADE, related_name="deliveries"
    )
    event = models.CharField(max_length=32, choices=WebhookEvent.choices)
    # The event's ``data`` object, fixed when the event happened.
    payload = models.JSONField()
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    # When the next attempt may start (the backoff after a failure).
    next_attempt_at = models.DateTimeField()
    # When a message was last sent for the next attempt; the sweeper re-sends after a grace.
    enqueued_at = models.DateTimeField(null=True)
    # An attempt in flight holds the delivery until then (a crashed worker's claim lapses).
    locked_until = models.DateTimeField(null=True)
    created_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True)
    last_status_code = models.PositiveIntegerField(null=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(
                fields=["next_attempt_at", "id"],
                name="webhookdelivery_due_idx",
                condition=models.Q(status="pending"),
            ),
            models.Index(fields=["subscription", "-id"], name="webhookdelivery_sub_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=DeliveryStatus.values),
                name="webhookdelivery_status_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(event__in=WebhookEvent.values),
                name="webhookdelivery_event_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(status="pending", finished_at__isnull=True)
                | (~models.Q(status="pending") & models.Q(finished_at__isnull=False)),
                name="webhookdelivery_finished_iff_done",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event} {self.delivery_id} ({self.status})"


class WebhookAttempt(models.Model):
    """One try at sending a delivery: the delivery log."""

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log"
    )
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.FloatField()
    url = models.URLField(max_length=2000, help_text="Where the last request of it went.")
    status_code = models.PositiveIntegerField(null=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["delivery", "number"], name="webhookattempt_delivery_number_uniq"
            ),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}"
