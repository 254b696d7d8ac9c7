"""What the review screens share: the role check, the refusal page, form errors as
the API's, and the case panel (the case and its waterfall chart)."""

from __future__ import annotations

import functools
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.safestring import mark_safe

from apps.accounts.roles import Role, has_role
from apps.core.exceptions import ApplicationError
from apps.explanations.selectors import explained_label

from .. import selectors
from ..waterfall import waterfall_layout, waterfall_svg

REVIEWERS = (Role.REVIEWER, Role.ESCALATION_MANAGER)
MANAGERS = (Role.ESCALATION_MANAGER,)
OVERVIEW = (Role.ESCALATION_MANAGER, Role.ADMIN)


def role_required(*roles: str):
    """Logged-in users holding one of ``roles``; others are sent to log in (anonymous)
    or refused with 403."""

    def decorate(view):
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not has_role(request.user, *roles):
                return refused(
                    request, "Your account does not have the role for this page.", status=403
                )
            return view(request, *args, **kwargs)

        return wrapped

    return decorate


def refused(request: HttpRequest, message: str, *, status: int) -> HttpResponse:
    return render(request, "ui/refused.html", {"message": message, "status": status}, status=status)


def form_error(form) -> ApplicationError:
    details = {field: " ".join(errors) for field, errors in form.errors.items()}
    return ApplicationError("Invalid input: " + "; ".join(f"{k}: {v}" for k, v in details.items()))


def cleaned(form) -> dict[str, Any]:
    """The bound form's cleaned data; its errors raised as one ``ApplicationError``."""
    if not form.is_valid():
        raise form_error(form)
    return form.cleaned_data


def case_context(item) -> dict[str, Any]:
    """The case panel's context: the case and its waterfall chart."""
    case = selectors.case_view(item=item)
    explanation = case["explanation"]
    if explanation is not None:
        layout = waterfall_layout(
            base_value=explanation["base_value"],
            model_output=explanation["model_output"],
            contributions=explanation["contributions"],
            output=explanation["output"],
            explained_label=explained_label(
                method=explanation["method"],
                output=explanation["output"],
                labels=item.prediction.model_version.labels,
                predicted=item.prediction.label,
            ),
        )
        # waterfall_svg escapes every text it writes.
        case["waterfall_svg"] = mark_safe(waterfall_svg(layout))  # noqa: S308
    return case
