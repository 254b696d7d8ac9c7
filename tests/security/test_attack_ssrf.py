"""SSRF through webhook URLs, replayed end to end (the unit rules of the address guard
are in tests/webhooks/test_address_guard.py).

A real HTTP server listens on loopback, standing for whatever the server's own network
holds. Admins aim subscriptions at it in every spelling (loopback names and numbers,
decimal, octal, hex, IPv4-mapped IPv6, 0.0.0.0, a public-looking name that resolves to
it) and at link-local and private addresses; a receiver that looks public redirects to
it. Through the admin form nothing is saved; through the delivery path (a subscription
saved while private addresses were allowed, or a name whose DNS answer changed since)
every attempt is logged as refused. The loopback server never gets a request.
"""

import socket

import pytest
from django.test import Client

from apps.webhooks import outbound
from apps.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookSubscription
from apps.webhooks.services.subscriptions import webhook_subscription_create
from tests.helpers import Receiver, database_state

pytestmark = pytest.mark.django_db

PUBLIC_LOOKING = "hooks.partner-example.test"
ADMIN_PASSWORD = "admin-pass-123"


def internal_urls(port: int) -> list[str]:
    """The loopback receiver (and the server's other neighbours), spelled every way."""
    return [
        f"http://127.0.0.1:{port}/hook",
        f"http://localhost:{port}/hook",
        f"http://127.1:{port}/hook",
        f"http://[::1]:{port}/hook",
        f"http://0.0.0.0:{port}/hook",
        f"http://2130706433:{port}/hook",
        f"http://0177.0.0.1:{port}/hook",
        f"http://0x7f000001:{port}/hook",
        f"http://0x7f.1:{port}/hook",
        f"http://[::ffff:127.0.0.1]:{port}/hook",
        f"http://[::ffff:7f00:1]:{port}/hook",
        f"http://{PUBLIC_LOOKING}:{port}/hook",
        f"https://{PUBLIC_LOOKING}:{port}/hook",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[fe80::1]/hook",
        "http://10.0.0.1/hook",
        "http://172.16.0.1/hook",
        "http://192.168.0.1/hook",
        "http://100.64.0.1/hook",
    ]


@pytest.fixture
def internal():
    """The server's own network: a real HTTP server on loopback that must stay quiet."""
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def dns(monkeypatch):
    """DNS is the edge: a public-looking name that resolves to loopback."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host == PUBLIC_LOOKING:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def admin_browser(world):
    admin = world.members["admin"].user
    admin.set_password(ADMIN_PASSWORD)
    admin.save(update_fields=["password"])
    browser = Client()
    assert browser.login(username=admin.username, password=ADMIN_PASSWORD)
    return browser


def test_the_admin_form_saves_no_subscription_to_an_internal_address(admin_browser, internal, dns):
    before = database_state()
    for url in internal_urls(internal.port):
        # when an admin saves a subscription aimed inside
        r = admin_browser.post(
            "/admin/webhooks/webhooksubscription/add/",
            {"name": "inside", "url": url, "events": ["prediction.decided"], "active": "on"},
        )
        # then the form comes back with the refusal and nothing is saved
        assert r.status_code == 200, (url, r.status_code)
        page = r.content.decode()
        assert "errorlist" in page, url
        assert "non-public" in page or "Enter a valid URL" in page, url
    assert not WebhookSubscription.objects.exists()
    assert database_state() == before
    assert internal.requests == []


def test_the_admin_cannot_move_a_subscription_inside_either(admin_browser, internal, dns):
    # given a subscription to a public receiver
    sub, _ = webhook_subscription_create(
        name="partner", url="https://93.184.216.34/hook", events=["prediction.decided"]
    )
    for url in internal_urls(internal.port):
        # when an admin edits its URL to an internal one
        r = admin_browser.post(
            f"/admin/webhooks/webhooksubscription/{sub.id}/change/",
            {"name": "partner", "url": url, "events": ["prediction.decided"], "active": "on"},
        )
        assert r.status_code == 200 and "errorlist" in r.content.decode(), url
    # then the URL is still the public one
    sub.refresh_from_db()
    assert sub.url == "https://93.184.216.34/hook"
    assert internal.requests == []


def decide_own_item(world, django_capture_on_commit_callbacks) -> None:
    """A reviewer's decision through the API; webhook deliveries run after commit."""
    reviewer = world.members["reviewer"]
    item, token = world.own["item"], world.own["lease_token"]
    with django_capture_on_commit_callbacks(execute=True):
        r = reviewer.post(
            f"/api/v1/reviews/{item}/decide/",
            {"lease_token": token, "label": "approve"},
            format="json",
        )
    assert r.status_code == 200, r.content


def assert_refused_deliveries(expected: int) -> None:
    deliveries = list(WebhookDelivery.objects.select_related("subscription"))
    assert len(deliveries) == expected
    for delivery in deliveries:
        url = delivery.subscription.url
        assert (delivery.status, delivery.attempts) == ("failed", 1), (url, delivery.last_error)
        assert delivery.last_error.startswith("refused:"), (url, delivery.last_error)
        [attempt] = WebhookAttempt.objects.filter(delivery=delivery)
        assert attempt.status_code is None and "non-public" in attempt.error, url


def test_deliveries_to_internal_addresses_are_refused_and_logged(
    world, internal, dns, settings, django_capture_on_commit_callbacks
):
    # given subscriptions saved while private receivers were allowed (or before a DNS
    # answer changed), aimed at every internal spelling
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = True
    urls = internal_urls(internal.port)
    for i, url in enumerate(urls):
        webhook_subscription_create(name=f"inside-{i}", url=url, events=["prediction.decided"])
    # when private receivers are refused again (the default) and a decision is made
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False
    decide_own_item(world, django_capture_on_commit_callbacks)
    # then every delivery failed at once as refused, and nothing reached loopback
    assert_refused_deliveries(len(urls))
    assert internal.requests == []


def test_a_public_loopback_cannot_redirect_a_delivery_inside(
    world, internal, public_loopback, dns, monkeypatch, django_capture_on_commit_callbacks
):
    # given an allowed receiver that answers every POST with a redirect inside, one
    # subscription per internal spelling (its path picks the target)
    targets = internal_urls(internal.port)
    for i in range(len(targets)):
        webhook_subscription_create(
            name=f"redirecting-{i}",
            url=f"http://127.0.0.2:{public_loopback.port}/r/{i}",
            events=["prediction.decided"],
        )
    public_loopback.redirect_to = None
    redirects = {f"/r/{i}": target for i, target in enumerate(targets)}
    original = outbound.post

    def answer_by_path(url, **kwargs):
        # the receiver redirects each path to its target (one receiver for all)
        path = url.split(str(public_loopback.port), 1)[-1]
        public_loopback.redirect_to = redirects.get(path)
        return original(url, **kwargs)

    monkeypatch.setattr(outbound, "post", answer_by_path)
    # when a decision is delivered to all of them
    decide_own_item(world, django_capture_on_commit_callbacks)
    # then the allowed receiver was asked once per subscription, the redirect was
    # refused, and nothing reached loopback or anything inside
    assert sorted(r.path for r in public_loopback.requests) == sorted(redirects)
    assert_refused_deliveries(len(targets))
    assert internal.requests == []


def test_a_redirect_chain_ending_inside_is_refused_at_the_last_hop(
    world, internal, public_loopback, django_capture_on_commit_callbacks
):
    # given a public receiver that redirects to a second public one, which redirects
    # to loopback in its decimal spelling
    second = Receiver(host="127.0.0.2", redirect_to=f"http://2130706433:{internal.port}/").start()
    try:
        public_loopback.redirect_to = second.url
        webhook_subscription_create(
            name="chain", url=public_loopback.url, events=["prediction.decided"]
        )
        decide_own_item(world, django_capture_on_commit_callbacks)
    finally:
        second.stop()
    assert (len(public_loopback.requests), len(second.requests)) == (1, 1)
    assert_refused_deliveries(1)
    assert internal.requests == []
