"""The reviewer's screens: the queues page, the claim, the case on screen and what a
reviewer does with it (decide, escalate, release, and the heartbeat that keeps the
lease while the page is open)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.roles import Role, has_role
from apps.core.exceptions import ApplicationError, Conflict
from apps.reviews.models import MAX_COMMENT
from apps.reviews.selectors import review_item_return
from apps.reviews.services import decisions, leases

from .. import selectors
from ..forms import DecideForm, EscalateForm, LeaseForm, StartForm
from .base import MANAGERS, REVIEWERS, case_context, cleaned, form_error, refused, role_required

SESSION_QUEUE = "ui_review_queue"


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
        return refused(request, form_error(form).message, status=400)
    request.session[SESSION_QUEUE] = form.cleaned_data["queue"]
    return _claim_next(request)


# -- the review screen ----------------------------------------------------------------


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
            # A manager's note from the case's last return from escalation, if any.
            "returned": review_item_return(item=item),
            "comment_max_length": MAX_COMMENT,
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
        data = cleaned(form)
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
        data = cleaned(form)
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
        data = cleaned(form)
        leases.review_item_release(user=request.user, item_id=item_id, token=data["lease_token"])
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
        data = cleaned(form)
        item = leases.review_item_heartbeat(
            user=request.user, item_id=item_id, token=data["lease_token"]
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
