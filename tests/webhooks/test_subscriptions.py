"""Subscriptions: validated by the services and the admin, secret shown once."""

import re

import pytest
from django.test import Client

from apps.accounts.services import account_upsert
from apps.core.exceptions import ValidationFailed
from apps.webhooks.models import WebhookSubscription
from apps.webhooks.services.subscriptions import (
    webhook_subscription_create,
    webhook_subscription_rotate_secret,
    webhook_subscription_update,
)

ADD = "/admin/webhooks/webhooksubscription/add/"


@pytest.fixture
def admin_browser(db):
    account_upsert(username="root", roles=["admin"], password="admin-pass-123")
    browser = Client()
    assert browser.login(username="root", password="admin-pass-123")
    return browser


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9000/hook", "http://10.0.0.5/hook", "http://2130706433/", "http://[::1]/"],
)
def test_a_private_url_is_refused_by_default(url):
    with pytest.raises(ValidationFailed) as refused:
        webhook_subscription_create(name="x", url=url, events=["prediction.decided"])
    assert refused.value.code == "webhook_url_refused"
    assert "non-public" in refused.value.details["url"]
    assert not WebhookSubscription.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "fields, bad",
    [
        ({"events": []}, "events"),
        ({"events": ["prediction.deleted"]}, "events"),
        ({"events": "prediction.decided"}, "events"),
        ({"name": ""}, "name"),
        ({"url": "ftp://93.184.216.34/"}, "url"),
        ({"url": None}, "url"),
        ({"url": "https://93.184.216.34/" + "a" * 2000}, "url"),
    ],
)
def test_bad_fields_are_refused(fields, bad):
    good = {"name": "x", "url": "https://93.184.216.34/hook", "events": ["item.escalated"]}
    with pytest.raises(ValidationFailed) as refused:
        webhook_subscription_create(**{**good, **fields})
    assert bad in refused.value.details
    assert not WebhookSubscription.objects.exists()


@pytest.mark.django_db
def test_create_generates_a_secret_and_update_rechecks_the_url():
    sub, secret = webhook_subscription_create(
        name="ml-ops",
        url="https://93.184.216.34/hook",
        events=["item.escalated", "prediction.decided", "item.escalated"],
    )
    assert len(secret) >= 40 and sub.secret == secret
    assert sub.events == ["prediction.decided", "item.escalated"]
    with pytest.raises(ValidationFailed):
        webhook_subscription_update(
            subscription=sub, name="ml-ops", url="http://192.168.0.9/", events=sub.events, active=1
        )
    sub.refresh_from_db()
    assert sub.url == "https://93.184.216.34/hook"
    assert webhook_subscription_rotate_secret(subscription=sub) != secret


def test_the_admin_refuses_a_private_url(admin_browser):
    # when an admin saves a subscription to a private address
    r = admin_browser.post(
        ADD,
        {"name": "internal", "url": "http://169.254.169.254/", "events": ["item.escalated"]},
    )
    # then the form comes back with the reason, and nothing is stored
    assert r.status_code == 200
    assert "non-public" in r.content.decode()
    assert not WebhookSubscription.objects.exists()


def test_the_admin_creates_a_subscription_and_shows_its_secret_once(admin_browser):
    r = admin_browser.post(
        ADD,
        {
            "name": "warehouse",
            "url": "https://93.184.216.34/hook",
            "events": ["prediction.decided", "item.escalated"],
            "active": "on",
        },
        follow=True,
    )
    assert r.status_code == 200
    sub = WebhookSubscription.objects.get()
    assert sub.events == ["prediction.decided", "item.escalated"] and sub.active
    assert sub.created_by.username == "root"
    page = r.content.decode()
    assert sub.secret in page
    # the change page does not show it again
    change = admin_browser.get(f"/admin/webhooks/webhooksubscription/{sub.id}/change/")
    assert change.status_code == 200
    assert sub.secret not in change.content.decode()
    # rotating shows the new one
    r = admin_browser.post(
        "/admin/webhooks/webhooksubscription/",
        {"action": "rotate_secret", "_selected_action": [sub.id]},
        follow=True,
    )
    sub.refresh_from_db()
    assert sub.secret in r.content.decode()
    assert re.search(r"not shown again", r.content.decode())


def test_the_admin_edits_a_subscription_through_the_service(admin_browser):
    sub, secret = webhook_subscription_create(
        name="a", url="https://93.184.216.34/hook", events=["item.escalated"]
    )
    r = admin_browser.post(
        f"/admin/webhooks/webhooksubscription/{sub.id}/change/",
        {"name": "b", "url": "https://93.184.216.35/hook", "events": ["prediction.decided"]},
    )
    assert r.status_code == 302
    sub.refresh_from_db()
    assert (sub.name, sub.url, sub.events, sub.active) == (
        "b",
        "https://93.184.216.35/hook",
        ["prediction.decided"],
        False,
    )
    assert sub.secret == secret


@pytest.mark.parametrize(
    "path",
    [
        "/admin/webhooks/webhooksubscription/",
        "/admin/webhooks/webhooksubscription/add/",
        "/admin/webhooks/webhookdelivery/",
    ],
)
def test_admin_pages_open(admin_browser, path):
    assert admin_browser.get(path).status_code == 200


def test_the_delivery_log_is_read_only(admin_browser):
    assert admin_browser.get("/admin/webhooks/webhookdelivery/add/").status_code == 403
