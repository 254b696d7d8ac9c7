"""Filters of the review screens. Each returns plain text; templates escape it."""

from typing import Any

from django import template

from apps.ui.selectors import display_value

register = template.Library()


@register.filter
def duration(seconds: Any) -> str:
    """Seconds as "2h 05m" (or "3d 4h", "4m 10s")."""
    try:
        total = int(abs(float(seconds)))
    except (TypeError, ValueError):
        return ""
    if total >= 86400:
        return f"{total // 86400}d {total % 86400 // 3600}h"
    if total >= 3600:
        return f"{total // 3600}h {total % 3600 // 60:02d}m"
    return f"{total // 60}m {total % 60:02d}s"


@register.filter
def percent(value: Any) -> str:
    try:
        return f"{float(value):.1%}"
    except (TypeError, ValueError):
        return ""


@register.filter
def event_data(data: Any) -> str:
    """An audit event's data as "key: value" pairs."""
    if not isinstance(data, dict):
        return display_value(data)
    return ", ".join(f"{k}: {display_value(v)}" for k, v in data.items())


@register.filter
def signed(value: Any) -> str:
    try:
        return f"{float(value):+.3f}"
    except (TypeError, ValueError):
        return ""


@register.simple_tag(takes_context=True)
def roles(context) -> frozenset[str]:
    """The roles of the logged-in user (for the navigation)."""
    from apps.accounts.roles import user_roles

    request = context.get("request")
    return user_roles(request.user) if request is not None else frozenset()
