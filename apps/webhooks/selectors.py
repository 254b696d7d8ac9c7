"""Reads for webhooks."""

from .models import WebhookSubscription


def webhook_subscriptions_for_event(*, event: str) -> list[int]:
    """Ids of the active subscriptions to ``event``: one query on a small table (served by
    the partial index ``webhooksub_active_idx``); events are matched in Python so that
    the embedded SQLite default runs the same code."""
    rows = WebhookSubscription.objects.filter(active=True).values_list("id", "events")
    return [sub_id for sub_id, events in rows if isinstance(events, list) and event in events]
