"""manage.py create_account, as the contract specifies it."""

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token

from apps.accounts.roles import user_roles
from apps.queues.models import Queue


def run(*args) -> list[str]:
    out = StringIO()
    call_command("create_account", *args, stdout=out)
    return out.getvalue().splitlines()


@pytest.mark.django_db
def test_create_with_roles_queues_password_and_token():
    # when an account is created with two roles, two queues and a token
    lines = run(
        "alice",
        "--role",
        "reviewer",
        "--role",
        "pipeline",
        "--queue",
        "fraud",
        "--queue",
        "credit",
        "--password",
        "s3cret-pass",
        "--token",
    )
    # then the token is alone on the last line
    user = User.objects.get(username="alice")
    assert lines[-1] == Token.objects.get(user=user).key
    # and the roles, queues and password are set
    assert user_roles(user) == {"reviewer", "pipeline"}
    assert set(user.review_queues.values_list("name", flat=True)) == {"fraud", "credit"}
    assert set(Queue.objects.values_list("name", flat=True)) >= {"fraud", "credit"}
    assert user.check_password("s3cret-pass")
    assert not user.is_staff


@pytest.mark.django_db
def test_running_again_updates_the_account_and_keeps_its_token():
    first = run("bob", "--role", "producer", "--token")[-1]
    lines = run("bob", "--role", "admin", "--role", "escalation_manager", "--token")
    user = User.objects.get(username="bob")
    assert lines[-1] == first
    assert user.is_staff
    assert user_roles(user) == {"admin", "escalation_manager", "reviewer"}
    assert User.objects.filter(username="bob").count() == 1


@pytest.mark.django_db
def test_without_token_no_token_is_printed_and_no_password_means_unusable():
    lines = run("carol", "--role", "reviewer")
    assert not Token.objects.exists()
    assert all(len(line) != 40 for line in lines)
    assert not User.objects.get(username="carol").has_usable_password()


@pytest.mark.django_db
def test_an_unknown_role_is_refused():
    with pytest.raises(CommandError):
        run("dave", "--role", "wizard")
    assert not User.objects.filter(username="dave").exists()
