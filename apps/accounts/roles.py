"""Roles are Django groups, except ``admin``, which is ``is_staff``.

A user may hold several roles. ``escalation_manager`` may do everything a reviewer
may. Permission classes here answer 403 to an authenticated caller without the role;
DRF answers 401 to a caller with no credentials before they run.
"""

from collections.abc import Iterable

from django.db import models
from rest_framework.permissions import BasePermission


class Role(models.TextChoices):
    PRODUCER = "producer"
    REVIEWER = "reviewer"
    ESCALATION_MANAGER = "escalation_manager"
    PIPELINE = "pipeline"
    ADMIN = "admin"


GROUP_ROLES = (Role.PRODUCER, Role.REVIEWER, Role.ESCALATION_MANAGER, Role.PIPELINE)

# Roles that imply others.
_IMPLIED: dict[str, set[str]] = {Role.ESCALATION_MANAGER: {Role.REVIEWER}}


def user_roles(user) -> frozenset[str]:
    """The roles the user holds, implied ones included; cached on the user object."""
    if not user or not user.is_authenticated:
        return frozenset()
    cached = getattr(user, "_reviewqueue_roles", None)
    if cached is not None:
        return cached
    names = user.groups.filter(name__in=GROUP_ROLES).values_list("name", flat=True)
    return roles_remember(user, names)


def roles_remember(user, group_names: Iterable[str]) -> frozenset[str]:
    """Cache on the user object the roles its groups (``group_names``; others than
    the role groups are ignored) and ``is_staff`` give, implied ones included.

    For whoever read the group names already (an authentication class that loads the
    user, its groups and its queues in one query).
    """
    roles: set[str] = {name for name in group_names if name in GROUP_ROLES}
    if user.is_staff:
        roles.add(Role.ADMIN)
    for role in list(roles):
        roles |= _IMPLIED.get(role, set())
    user._reviewqueue_roles = frozenset(str(r) for r in roles)
    return user._reviewqueue_roles


def has_role(user, *roles: str) -> bool:
    return not user_roles(user).isdisjoint(roles)


def role_permission(*roles: str) -> type[BasePermission]:
    """A DRF permission class admitting callers that hold any of ``roles``."""

    class HasRole(BasePermission):
        message = f"This action needs the role {' or '.join(roles)}."

        def has_permission(self, request, view) -> bool:
            return bool(request.user and request.user.is_authenticated) and has_role(
                request.user, *roles
            )

    HasRole.__name__ = "HasRole_" + "_or_".join(roles)
    return HasRole


IsAdmin = role_permission(Role.ADMIN)
