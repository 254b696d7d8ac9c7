"""The review screens: server-rendered pages for reviewers and escalation managers.

Every action calls the same service as the API does (``apps.reviews.services``:
claim, heartbeat, release, decide, escalate; escalation claim, resolve, return), so the
lease rules, permissions and validation are the API's. Views only check the role,
shape the form input, call one service and choose the next page. A refusal from a
service (``ApplicationError``) is shown as a page with the same status code the API
would answer.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.roles import Role, has_role
from apps.core.exceptions import ApplicationError, Conflict
from apps.explanations.selectors import explained_label
from apps.reviews.models import EscalationStatus
from apps.reviews.services import decisions, escalations, leases

from . import charts, selectors
from .forms import DecideForm, EscalateForm, LeaseForm, ResolveForm, ReturnForm, StartForm
from .waterfall import waterfall_layout, waterfall_svg

REVIEWERS = (Role.REVIEWER, Role.ESCALATION_MANAGER)
MANAGERS = (Role.ESCALATION_MANAGER,)
OVERVIEW = (Role.ESCALATION_MANAGER, Role.ADMIN)
SESSION_QUEUE = "ui_review_queue"


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


def _form_error(form) -> ApplicationError:
    details = {field: " ".join(errors) for field, errors in form.errors.items()}
    return ApplicationError("Invalid input: " + "; ".join(f"{k}: {v}" for k, v in details.items()))


def _lease_seconds() -> int:
    return int(settings.REVIEW_LEASE_SECONDS)


def heartbeat_seconds() -> int:
    """How often an open review page renews its lease: a third of the lease, so two
    lost heartbeats in a row still leave it alive."""
    return max(1, _lease_seconds() // 3)


# -- the reviewer's start page --------------------------------------------------------


@require_GET
def queues(request: HttpRequest) -> HttpResponse:
    """Where a login lands: a reviewer's queues with ready counts and the oldest due
    time; an admin who does not review goes to the overview."""
    user = request.user
    if not user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if not has_role(user, *REVIEWERS):
        if has_role(user, Role.ADMIN):
            return redirect("ui:overview")
        return refused(request, "Your account does not have the role for this page.", status=403)
    context = {
        "queues": selectors.queue_summaries(user=user),
        "held": selectors.held_item(user=user, now=timezone.now()),
        "is_manager": has_role(user, *MANAGERS),
        "escalations_open": (
            selectors.active_escalation_count(user=user) if has_role(user, *MANAGERS) else 0
        ),
        "selected_queue": request.session.get(SESSION_QUEUE, ""),
    }
    template = "ui/_queue_table.html" if request.headers.get("HX-Request") else "ui/queues.html"
    return render(request, template, context)


def _claim_next(request: HttpRequest) -> HttpResponse:
    """Lease the next case (the service's claim) and open it, or go back to the
    queues when nothing is ready."""
    queue = request.session.get(SESSION_QUEUE) or None
    try:
        item = leases.review_item_claim(user=request.user, queue=queue)
    except ApplicationError as exc:
        return refused(request, exc.message, status=exc.status_code)
    if item is None:
        messages.info(request, "Nothing is ready for you right now.")
        return redirect("ui:queues")
    return redirect("ui:review")


@require_POST
@role_required(*REVIEWERS)
def start(request: HttpRequest) -> HttpResponse:
    form = StartForm(request.POST)
    if not form.is_valid():
        return refused(request, _form_error(form).message, status=400)
    request.session[SESSION_QUEUE] = form.cleaned_data["queue"]
    return _claim_next(request)


# -- the review screen ----------------------------------------------------------------


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


def render_review(
    request: HttpRequest, item, *, status: int = 200, error: str = "", panel: str = ""
) -> HttpResponse:
    context = case_context(item)
    labels = context["labels"]
    context.update(
        {
            "label_keys": [(str(i + 1), label) for i, label in enumerate(labels[:9])],
            "reason_codes": selectors.reason_codes(model_name=context["model"].name),
            "escalation_reasons": selectors.ESCALATION_REASONS,
            "heartbeat_seconds": heartbeat_seconds(),
            "error": error,
            "panel": panel,
            "posted": request.POST if request.method == "POST" else {},
        }
    )
    return render(request, "ui/review.html", context, status=status)


@require_GET
@role_required(*REVIEWERS)
def review(request: HttpRequest) -> HttpResponse:
    """The case the caller holds, one at a time."""
    item = selectors.held_item(user=request.user, now=timezone.now())
    if item is None:
        messages.info(request, "You hold no case. Start reviewing to get one.")
        return redirect("ui:queues")
    return render_review(request, item)


def _after_refusal(request: HttpRequest, item_id: int, exc: ApplicationError, panel: str):
    """Show the case again with the refusal, or say the lease is gone."""
    item = selectors.held_item(user=request.user, now=timezone.now())
    if isinstance(exc, Conflict) or item is None or item.id != item_id:
        return refused(request, exc.message, status=exc.status_code)
    return render_review(request, item, status=exc.status_code, error=exc.message, panel=panel)


@require_POST
@role_required(*REVIEWERS)
def decide(request: HttpRequest, item_id: int) -> HttpResponse:
    """Accept (the model's label) or override (another label with a reason code),
    then open the next case at once."""
    form = DecideForm(request.POST)
    panel = "override"
    try:
        if not form.is_valid():
            raise _form_error(form)
        data = form.cleaned_data
        decisions.review_item_decide(
            user=request.user,
            item_id=item_id,
            token=data["lease_token"],
            label=data["label"],
            reason_code=data["reason_code"] or None,
            comment=data["comment"] or None,
        )
    except ApplicationError as exc:
        return _after_refusal(request, item_id, exc, panel)
    return _claim_next(request)


@require_POST
@role_required(*REVIEWERS)
def escalate(request: HttpRequest, item_id: int) -> HttpResponse:
    form = EscalateForm(request.POST)
    try:
        if not form.is_valid():
            raise _form_error(form)
        data = form.cleaned_data
        decisions.review_item_escalate(
            user=request.user,
            item_id=item_id,
            token=data["lease_token"],
            reason=data["reason"],
            comment=data["comment"] or None,
        )
    except ApplicationError as exc:
        return _after_refusal(request, item_id, exc, "escalate")
    return _claim_next(request)


@require_POST
@role_required(*REVIEWERS)
def release(request: HttpRequest, item_id: int) -> HttpResponse:
    """Skip: give the case back unchanged. Also what the page sends (a beacon) when
    the reviewer leaves it."""
    form = LeaseForm(request.POST)
    try:
        if not form.is_valid():
            raise _form_error(form)
        leases.review_item_release(
            user=request.user, item_id=item_id, token=form.cleaned_data["lease_token"]
        )
    except ApplicationError as exc:
        return refused(request, exc.message, status=exc.status_code)
    messages.info(request, "The case went back to the queue.")
    return redirect("ui:queues")


@require_POST
@role_required(*REVIEWERS)
def heartbeat(request: HttpRequest, item_id: int) -> HttpResponse:
    """Renew the lease (htmx, while the page is open); the lease badge comes back,
    or, with 409, a notice that the lease is gone."""
    form = LeaseForm(request.POST)
    try:
        if not form.is_valid():
            raise _form_error(form)
        item = leases.review_item_heartbeat(
            user=request.user, item_id=item_id, token=form.cleaned_data["lease_token"]
        )
    except ApplicationError as exc:
        return render(
            request,
            "ui/_lease.html",
            {"lost": True, "message": exc.message},
            status=exc.status_code,
        )
    return render(
        request,
        "ui/_lease.html",
        {"item": item, "heartbeat_seconds": heartbeat_seconds(), "lease_token": item.lease_token},
    )


# -- escalations ----------------------------------------------------------------------


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
    request: HttpRequest, escalation, *, status: int = 200, error: str = ""
) -> HttpResponse:
    item = escalation.item
    now = timezone.now()
    held = (
        escalation.status == EscalationStatus.CLAIMED
        and escalation.claimed_by_id == request.user.id
        and escalation.lease_expires_at is not None
        and escalation.lease_expires_at > now
    )
    context = case_context(item)
    context.update(
        {
            "escalation": escalation,
            "held": held,
            "claimable": escalation.status == EscalationStatus.OPEN
            or (
                escalation.status == EscalationStatus.CLAIMED
                and not held
                and escalation.lease_expires_at is not None
                and escalation.lease_expires_at <= now
            ),
            "history": selectors.item_history(item_id=item.id),
            "all_escalations": selectors.item_escalations(item_id=item.id),
            "decision": selectors.item_decision(item_id=item.id),
            "label_keys": [(str(i + 1), label) for i, label in enumerate(context["labels"][:9])],
            "late_seconds": max(0.0, (now - item.due_at).total_seconds()),
            "error": error,
        }
    )
    return render(request, "ui/escalation.html", context, status=status)


@require_GET
@role_required(*MANAGERS)
def escalation_detail(request: HttpRequest, escalation_id: int) -> HttpResponse:
    try:
        escalation = escalations.escalation_visible(user=request.user, escalation_id=escalation_id)
    except ApplicationError as exc:
        return refused(request, exc.message, status=exc.status_code)
    return render_escalation(request, escalation)


def _escalation_action(request: HttpRequest, escalation_id: int, act) -> HttpResponse:
    try:
        act()
    except ApplicationError as exc:
        try:
            escalation = escalations.escalation_visible(
                user=request.user, escalation_id=escalation_id
            )
        except ApplicationError:
            return refused(request, exc.message, status=exc.status_code)
        return render_escalation(request, escalation, status=exc.status_code, error=exc.message)
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
        if not form.is_valid():
            raise _form_error(form)
        data = form.cleaned_data
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
        if not form.is_valid():
            raise _form_error(form)
        data = form.cleaned_data
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


# -- the overview ---------------------------------------------------------------------


def _duration(seconds: float) -> str:
    seconds = int(abs(seconds))
    if seconds >= 86400:
        return f"{seconds // 86400}d {seconds % 86400 // 3600}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 60}m {seconds % 60}s"


@require_GET
@role_required(*OVERVIEW)
def overview(request: HttpRequest) -> HttpResponse:
    """Managers' figures, each as a small chart: queue depth and oldest item per queue,
    decisions per hour, override rates per model version and per routing reason, SLA
    breaches per day."""
    now = timezone.now()
    week_ago = now - timedelta(days=7)
    depths = selectors.queue_depths()
    oldest = []
    for q in depths:
        if q["oldest_due"] is None:
            oldest.append((q["name"], 0.0, "none waiting"))
        else:
            late = (now - q["oldest_due"]).total_seconds()
            text = f"{_duration(late)} late" if late > 0 else f"due in {_duration(late)}"
            oldest.append((q["name"], max(0.0, late / 3600), text))
    per_hour = selectors.decisions_per_hour(now=now)
    by_model = selectors.override_rates_by_model(since=week_ago)
    by_reason = selectors.override_rates_by_reason(since=week_ago)
    breaches = selectors.sla_breaches_per_day(now=now)
    context = {
        "depth_chart": charts.bar_chart(
            [(q["name"], q["waiting"], f"{q['waiting']:,}") for q in depths],
            summary="Items waiting per queue.",
        ),
        "oldest_chart": charts.bar_chart(
            oldest, alert_above=0.0, summary="How late the oldest waiting item of each queue is."
        ),
        "depths": depths,
        "hourly_chart": charts.column_chart(
            [(t.strftime("%H:00"), n) for t, n in per_hour],
            summary=f"{sum(n for _, n in per_hour)} decisions in the last 24 hours.",
        ),
        "decisions_24h": sum(n for _, n in per_hour),
        "model_chart": charts.bar_chart(
            [(r["model"], r["rate"], f"{r['rate']:.0%} of {r['total']}") for r in by_model],
            maximum=1.0,
            summary="Share of decisions that overrode the model, per model version, 7 days.",
        ),
        "reason_chart": charts.bar_chart(
            [(r["reason"], r["rate"], f"{r['rate']:.0%} of {r['total']}") for r in by_reason],
            maximum=1.0,
            summary="Share of decisions that overrode the model, per routing reason, 7 days.",
        ),
        "breach_chart": charts.column_chart(
            [(t.strftime("%m-%d"), n) for t, n in breaches],
            label_every=3,
            summary=f"{sum(n for _, n in breaches)} SLA breaches in the last 14 days.",
        ),
        "breaches_14d": sum(n for _, n in breaches),
        "overdue_now": selectors.overdue_open_items(now=now),
        "now": now,
    }
    return render(request, "ui/overview.html", context)
