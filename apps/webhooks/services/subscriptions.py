"""Webhook subscriptions, managed by admins: a name, a URL the address guard lets
through, the events it wants, and a generated signing secret shown once."""

from __future__ import annotations

import secrets

from django.conf import settings

from apps.core.exceptions import ValidationFailed

from .. import outbound
from ..models import WebhookEvent, WebhookSubscription

MAX_URL_LENGTH = 2000
MAX_NAME_LENGTH = 100


def webhook_url_check(*, url: object) -> str:
    """The URL, if the address guard lets it through now; ValidationFailed otherwise."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise ValidationFailed(
            "Bad webhook URL.", details={"url": f"must be a URL of at most {MAX_URL_LENGTH} chars"}
        )
    try:
        outbound.check_url(url, allow_private=settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES)
    except outbound.AddressRefused as exc:
        raise ValidationFailed(
            "The webhook URL is refused.", code="webhook_url_refused", details={"url": str(exc)}
        ) from None
    return url


def webhook_events_check(*, events: object) -> list[str]:
    """The event names, deduplicated in a stable order; ValidationFailed if unknown."""
    if (
        not isinstance(events, list | tuple)
        or not events
        or not all(isinstance(e, str) and e in WebhookEvent.values for e in events)
    ):
        raise ValidationFailed(
            "Bad webhook events.",
            details={"events": f"must be a non-empty list drawn from {WebhookEvent.values!r}"},
        )
    return [e for e in WebhookEvent.values if e in events]


def _name_check(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
        raise ValidationFailed(
            "Bad name.", details={"name": f"must be text of 1 to {MAX_NAME_LENGTH} characters"}
        )
    return name.strip()


def webhook_subscription_create(
    *, name: object, url: object, events: object, active: bool = True, created_by=None
) -> tuple[WebhookSubscription, str]:
    """Create a subscription with a generated secret; the subscription and the secret
    (to show once). The URL must pass the address guard."""
    subscription = WebhookSubscription.objects.create(
        name=_name_check(name),
        url=webhook_url_check(url=url),
        events=webhook_events_check(events=events),
        active=bool(active),
        secret=secrets.token_urlsafe(32),
        created_by=created_by,
    )
    return subscription, subscription.secret


def webhook_subscription_update(
    *, subscription: WebhookSubscription, name: object, url: object, events: object, active: bool
) -> WebhookSubscription:
    """Change a subscription's name, URL, events or active flag (not its secret).
    Deliveries already queued keep going to the subscription's URL at send time."""
    subscription.name = _name_check(name)
    subscription.url = webhook_url_check(url=url)
    subscription.events = webhook_events_check(events=events)
    subscription.active = bool(active)
    subscription.save(update_fields=["name", "url", "events", "active", "updated_at"])
    return subscription


def webhook_subscription_rotate_secret(*, subscription: WebhookSubscription) -> str:
    """Replace the secret; the new one, to show once. Attempts from now on use it."""
    subscription.secret = secrets.token_urlsafe(32)
    subscription.save(update_fields=["secret", "updated_at"])
    return subscription.secret
