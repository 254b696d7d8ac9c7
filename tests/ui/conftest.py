"""Fixtures of the review-screen tests: accounts that log in with a password, and
browsers (Django's test client here; Playwright in the browser tests)."""

import pytest
from django.test import Client

from apps.accounts.services import account_upsert
from apps.registry.models import ReasonCode

PASSWORD = "correct-horse-battery"

# Every payload a page must show as text. Any that ran would set window.__xss.
XSS = [
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=2">',
    '<svg onload="window.__xss=3"></svg>',
    "javascript:window.__xss=4",
    '"><script>window.__xss=5</script>',
    "</title><script>window.__xss=6</script>",
    "{{ 7*7 }}<html>",
]


def login_client(username: str, *roles: str, queues=()) -> Client:
    account_upsert(username=username, roles=roles, queues=queues, password=PASSWORD)
    client = Client()
    assert client.login(username=username, password=PASSWORD)
    return client


@pytest.fixture
def reason_codes(db):
    for code in ("income_misread", "policy_exception"):
        ReasonCode.objects.get_or_create(model_name="credit-default", code=code)
