"""The escalation managers' screens: the open and claimed escalations, one
escalation with its case and history, and claim, resolve and return.

Whether the manager holds an escalation or may claim it is the escalation service's
rule (``escalation_standing``), the one its writes compare-and-set on."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from apps.core.exceptions import ApplicationError
from apps.reviews.models import MAX_COMMENT
from apps.reviews.services import escalations

from .. import selectors
from ..forms import ResolveForm, ReturnForm
from .base import MANAGERS, case_context, cleaned, refused, role_required


@require_GET
@role_required(*MANAGERS)
def escalation_list(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    rows = [
        {
            "escalation": e,
            "age_seconds": (now - e.raised_at).total_seconds(),
            "late_seconds": max(0.0, (now - e.item.due_at).total_seconds()),
        }
        for e in selectors.active_escalations(user=request.user)
    ]
    template = (
        "ui/_escalation_table.html" if request.headers.get("HX-Request") else "ui/escalations.html"
    )
    return render(request, template, {"rows": rows, "now": now})


def render_escalation(
    request: HttpRequest, escalation_id: int, *, status: int = 200, error: str = ""
) -> HttpResponse:
    """The escalation's screen; NotFound (as a refusal) if it is not the caller's to see."""
    now = timezone.now()
    standing = escalations.escalation_standing(
        user=request.user, escalation_id=escalation_id, now=now
    )
    escalation = standing.escalation
    item = escalation.item
    context = case_context(item)
    context.update(
        {
            "escalation": escalation,
            "held": standing.held,
            "claimable": standing.claimable,
            "history": selectors.item_history(item_id=item.id),
            "all_escalations": selectors.item_escalations(item_id=item.id),
            "decision": selectors.item_decision(item_id=item.id),
            "label_keys": [(str(i + 1), label) for i, label in enumerate(context["labels"][:9])],
            "late_seconds": max(0.0, (now - item.due_at).total_seconds()),
            "comment_max_length": MAX_COMMENT,
            "error": error,
        }
    )
    return render(request, "ui/escalation.html", context, status=status)


@require_GET
@role_required(*MANAGERS)
def escalation_detail(request: HttpRequest, escalation_id: int) -> HttpResponse:
    try:
        return render_escalation(request, escalation_id)
    except ApplicationError as exc:
        return refused(request, exc.message, status=exc.status_code)


def _escalation_action(
    request: HttpRequest, escalation_id: int, act: Callable[[], object]
) -> HttpResponse | None:
    """Run ``act``; None when it succeeded, else the escalation's screen with the
    refusal (or the bare refusal when the escalation is not the caller's to see)."""
    try:
        act()
    except ApplicationError as exc:
        try:
            return render_escalation(
                request, escalation_id, status=exc.status_code, error=exc.message
            )
        except ApplicationError:
            return refused(request, exc.message, status=exc.status_code)
    return None


@require_POST
@role_required(*MANAGERS)
def escalation_claim(request: HttpRequest, escalation_id: int) -> HttpResponse:
    def act():
        escalations.escalation_claim(user=request.user, escalation_id=escalation_id)

    return _escalation_action(request, escalation_id, act) or redirect(
        "ui:escalation", escalation_id=escalation_id
    )


@require_POST
@role_required(*MANAGERS)
def escalation_resolve(request: HttpRequest, escalation_id: int) -> HttpResponse:
    form = ResolveForm(request.POST)

    def act():
        data = cleaned(form)
        escalations.escalation_resolve(
            user=request.user,
            escalation_id=escalation_id,
            label=data["label"],
            comment=data["comment"] or None,
            token=data["lease_token"] or None,
        )

    refusal = _escalation_action(request, escalation_id, act)
    if refusal is not None:
        return refusal
    messages.success(request, f"Escalation {escalation_id} resolved.")
    return redirect("ui:escalations")


@require_POST
@role_required(*MANAGERS)
def escalation_return(request: HttpRequest, escalation_id: int) -> HttpResponse:
    form = ReturnForm(request.POST)

    def act():
        data = cleaned(form)
        escalations.escalation_return(
            user=request.user,
            escalation_id=escalation_id,
            comment=data["comment"] or None,
            token=data["lease_token"] or None,
        )

    refusal = _escalation_action(request, escalation_id, act)
    if refusal is not None:
        return refusal
    messages.success(request, f"Escalation {escalation_id} returned to the review queue.")
    return redirect("ui:escalations")
