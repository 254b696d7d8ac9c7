"""Writes to accounts: users, their roles and their queues."""

from collections.abc import Iterable

from django.contrib.auth.models import Group, User
from django.db import transaction
from rest_framework.authtoken.models import Token

from apps.queues.services import memberships_set

from .roles import GROUP_ROLES, Role


def account_upsert(
    *,
    username: str,
    roles: Iterable[str],
    queues: Iterable[str] = (),
    password: str | None = None,
) -> User:
    """Create the account or update it to hold exactly ``roles`` and ``queues``.

    Queues that do not exist yet are created. An account with no queue works on every
    queue. Role ``admin`` makes the account staff (and a Django superuser).
    """
    roles = set(roles)
    unknown = roles - set(Role.values)
    if unknown:
        raise ValueError(f"unknown role(s): {', '.join(sorted(unknown))}")
    with transaction.atomic():
        user, created = User.objects.get_or_create(username=username)
        # Admins manage users, queues and models in the Django admin too.
        user.is_staff = user.is_superuser = Role.ADMIN in roles
        if password:
            user.set_password(password)
        elif created:
            user.set_unusable_password()
        user.save()
        user.groups.set([Group.objects.get_or_create(name=r)[0] for r in GROUP_ROLES if r in roles])
        memberships_set(user=user, queues=queues)
    return user


def account_token(*, user: User) -> str:
    """The account's API token, created on first use."""
    token, _ = Token.objects.get_or_create(user=user)
    return token.key
