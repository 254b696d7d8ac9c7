"""The overview: managers' and admins' figures, each as a small chart."""

from __future__ import annotations

from datetime import timedelta

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from .. import charts, selectors
from .base import OVERVIEW, role_required


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
