"""The Django admin opens for admins, and its registries cannot rewrite history."""

import pytest
from django.test import Client

from apps.accounts.services import account_upsert


@pytest.fixture
def admin_browser(db):
    account_upsert(username="root", roles=["admin"], password="admin-pass-123")
    browser = Client()
    assert browser.login(username="root", password="admin-pass-123")
    return browser


@pytest.mark.parametrize(
    "path",
    [
        "/admin/",
        "/admin/queues/queue/",
        "/admin/queues/queue/add/",
        "/admin/registry/modelversion/",
        "/admin/predictions/prediction/",
        "/admin/reviews/reviewitem/",
        "/admin/auth/user/",
        "/admin/registry/reasoncode/",
        "/admin/registry/reasoncode/add/",
    ],
)
def test_admin_pages_open_for_an_admin(admin_browser, path):
    assert admin_browser.get(path).status_code == 200


def test_model_versions_cannot_be_added_in_the_admin(admin_browser):
    assert admin_browser.get("/admin/registry/modelversion/add/").status_code == 403


def test_the_admin_is_closed_to_other_roles(db):
    account_upsert(username="rev", roles=["reviewer"], password="reviewer-pass-1")
    browser = Client()
    browser.login(username="rev", password="reviewer-pass-1")
    assert browser.get("/admin/").status_code == 302
