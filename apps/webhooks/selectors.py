"""Reads for webhooks."""

from django.db.models import QuerySet

from .models import WebhookAttempt, WebhookSubscription


def webhook_subscriptions_for_event(*, event: str) -> list[int]:
    """Ids of the active subscriptions to ``event``: one query on a small table (served by
    the partial index ``webhooksub_active_idx``); events are matched in Python so that
    the embedded SQLite default runs the same code."""
    rows = WebhookSubscription.objects.filter(active=True).values_list("id", "events")
    return [sub_id for sub_id, events in rows if isinstance(events, list) and event in events]


def webhook_attempts(*, delivery_id: int) -> QuerySet[WebhookAttempt]:
    """The delivery log of one delivery, oldest attempt first."""
    return WebhookAttempt.objects.filter(delivery_id=delivery_id).order_by("number")
