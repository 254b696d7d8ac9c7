"""Reads for the review screens: the caller's queues, the case on screen, its history,
and the overview figures. Writes go through ``apps.reviews.services`` only.

A reviewer sees a case as the API's claim shows it: sensitive features removed (the
registry's rule, ``ModelVersion.public_features``, which the API applies too; tests/ui
check both agree) and their attribution folded into one row
(``explanation_for_reviewer``, the API's own).
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Min, Q, QuerySet
from django.db.models.functions import TruncDay, TruncHour

from apps.audit.models import AuditEvent
from apps.explanations.selectors import explanation_for_reviewer
from apps.queues.models import Queue
from apps.queues.scope import in_scope, queue_scope
from apps.registry.models import ReasonCode
from apps.reviews.models import ACTIVE_ESCALATION, Decision, Escalation, ItemStatus, ReviewItem
from apps.reviews.selectors import escalation_list, review_item_held_by

HISTORY_LIMIT = 200
ESCALATION_PAGE = 200
# A case's escalation reasons a reviewer can pick from (any snake_case reason is valid).
ESCALATION_REASONS = (
    ("needs_expert", "Needs an expert"),
    ("policy_unclear", "Policy unclear"),
    ("data_problem", "Data looks wrong"),
    ("suspected_fraud", "Suspected fraud"),
)


def queue_summaries(*, user) -> list[dict[str, Any]]:
    """The caller's queues with ready and in-review counts and the earliest due time
    among ready items; one aggregate query."""
    ready = Q(items__status=ItemStatus.READY)
    scope = queue_scope(user)
    queues = Queue.objects.all() if scope is None else Queue.objects.filter(id__in=scope)
    rows = (
        queues.order_by("name")
        .values("id", "name")
        .annotate(
            ready=Count("items", filter=ready),
            leased=Count("items", filter=Q(items__status=ItemStatus.LEASED)),
            oldest_due=Min("items__due_at", filter=ready),
        )
    )
    return [dict(row) for row in rows]


def held_item(*, user, now: datetime) -> ReviewItem | None:
    """The item the caller holds a live lease on, if any, with everything the review
    screen shows (its latest return from escalation included): the reviews app's join,
    one statement."""
    return review_item_held_by(user=user, now=now)


def display_value(value: Any) -> str:
    """A feature or context value as text (nested values as JSON)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def case_view(*, item: ReviewItem) -> dict[str, Any]:
    """What the screen shows of a case: the prediction without sensitive features,
    its context, the model's label and probabilities, and the explanation."""
    prediction = item.prediction
    version = prediction.model_version
    features = version.public_features(prediction.features)
    order = [f["name"] for f in version.features if f["name"] in features]
    probabilities = prediction.probabilities or {}
    explanation = getattr(prediction, "explanation", None)
    return {
        "item": item,
        "prediction": prediction,
        "model": version,
        "labels": list(version.labels),
        "features": [(name, display_value(features[name])) for name in order],
        "context": [
            (str(k), display_value(v)) for k, v in sorted((prediction.context or {}).items())
        ],
        "probabilities": [
            (label, float(probabilities.get(label, 0.0)), label == prediction.label)
            for label in version.labels
        ],
        "explanation": None
        if explanation is None
        else explanation_for_reviewer(
            explanation=explanation, features=version.features, values=prediction.features
        ),
    }


def reason_codes(*, model_name: str) -> list[ReasonCode]:
    return list(ReasonCode.objects.filter(model_name=model_name, active=True).order_by("code"))


def item_history(*, item_id: int) -> list[AuditEvent]:
    """The case's audit events, oldest first (the newest HISTORY_LIMIT)."""
    events = AuditEvent.objects.filter(item_id=item_id).order_by("-id")[:HISTORY_LIMIT]
    return list(reversed(events))


def item_escalations(*, item_id: int) -> QuerySet[Escalation]:
    return Escalation.objects.filter(item_id=item_id).select_related(
        "raised_by", "claimed_by", "closed_by"
    )


def item_decision(*, item_id: int) -> Decision | None:
    return Decision.objects.filter(item_id=item_id).select_related("decided_by").first()


def active_escalations(*, user) -> list[Escalation]:
    """Open and claimed escalations of the caller's queues, oldest first."""
    qs = (
        escalation_list(user=user).filter(status__in=ACTIVE_ESCALATION).select_related("claimed_by")
    )
    return list(qs.order_by("raised_at", "id")[:ESCALATION_PAGE])


def active_escalation_count(*, user) -> int:
    return Escalation.objects.filter(
        in_scope(user, "item__queue_id"), status__in=ACTIVE_ESCALATION
    ).count()


# -- the overview ---------------------------------------------------------------------


def queue_depths() -> list[dict[str, Any]]:
    """Every queue: items waiting (ready), in review, escalated, and the oldest due
    time among those waiting."""
    waiting = Q(items__status__in=[ItemStatus.READY, ItemStatus.PENDING])
    rows = (
        Queue.objects.order_by("name")
        .values("name")
        .annotate(
            waiting=Count("items", filter=waiting),
            leased=Count("items", filter=Q(items__status=ItemStatus.LEASED)),
            escalated=Count("items", filter=Q(items__status=ItemStatus.ESCALATED)),
            oldest_due=Min("items__due_at", filter=waiting),
        )
    )
    return [dict(row) for row in rows]


def decisions_per_hour(*, now: datetime, hours: int = 24) -> list[tuple[datetime, int]]:
    """Decisions per hour over the last ``hours`` hours, oldest first, zeros included."""
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=hours)
    counts = dict(
        Decision.objects.filter(decided_at__gte=start, decided_at__lt=end)
        .annotate(hour=TruncHour("decided_at"))
        .order_by()
        .values("hour")
        .annotate(n=Count("id"))
        .values_list("hour", "n")
    )
    return [
        (start + timedelta(hours=h), counts.get(start + timedelta(hours=h), 0))
        for h in range(hours)
    ]


def override_rates_by_model(*, since: datetime) -> list[dict[str, Any]]:
    """Per model version: decisions since ``since`` and the share that overrode it."""
    rows = (
        Decision.objects.filter(decided_at__gte=since)
        .order_by()
        .values("item__prediction__model_version__name", "item__prediction__model_version__version")
        .annotate(total=Count("id"), overridden=Count("id", filter=Q(overridden=True)))
        .order_by(
            "item__prediction__model_version__name", "item__prediction__model_version__version"
        )
    )
    return [
        {
            "model": f"{r['item__prediction__model_version__name']}:"
            f"{r['item__prediction__model_version__version']}",
            "total": r["total"],
            "overridden": r["overridden"],
            "rate": r["overridden"] / r["total"] if r["total"] else 0.0,
        }
        for r in rows
    ]


def override_rates_by_reason(*, since: datetime) -> list[dict[str, Any]]:
    """Per routing reason (why the case was sent to review): decisions since ``since``
    and the share that overrode the model. A case routed for two reasons counts for
    both. Reasons are a JSON list per item, so this tallies in Python, streaming."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    rows = (
        Decision.objects.filter(decided_at__gte=since)
        .order_by()
        .values_list("overridden", "item__reasons")
        .iterator(chunk_size=5000)
    )
    for overridden, reasons in rows:
        for reason in reasons or ["(none)"]:
            totals[str(reason)][0] += 1
            totals[str(reason)][1] += int(overridden)
    return [
        {"reason": reason, "total": t, "overridden": o, "rate": o / t}
        for reason, (t, o) in sorted(totals.items())
    ]


def sla_breaches_per_day(*, now: datetime, days: int = 14) -> list[tuple[datetime, int]]:
    """SLA breaches escalated per day over the last ``days`` days, oldest first."""
    end = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    start = end - timedelta(days=days)
    counts = dict(
        Escalation.objects.filter(reason="sla_breach", raised_at__gte=start, raised_at__lt=end)
        .annotate(day=TruncDay("raised_at"))
        .order_by()
        .values("day")
        .annotate(n=Count("id"))
        .values_list("day", "n")
    )
    return [
        (start + timedelta(days=d), counts.get(start + timedelta(days=d), 0)) for d in range(days)
    ]


def overdue_open_items(*, now: datetime) -> int:
    """Undecided items already past their SLA that no breach escalation took yet."""
    return ReviewItem.objects.filter(
        status__in=[ItemStatus.PENDING, ItemStatus.READY, ItemStatus.LEASED],
        sla_breached_at__isnull=True,
        due_at__lt=now,
    ).count()
