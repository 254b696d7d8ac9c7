"""Fixtures of the review-screen tests (accounts that log in with a password are made
by ``tests.factories.login_client``)."""

import pytest

from apps.registry.models import ReasonCode


@pytest.fixture
def reason_codes(db):
    for code in ("income_misread", "policy_exception"):
        ReasonCode.objects.get_or_create(model_name="credit-default", code=code)
