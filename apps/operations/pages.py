"""Server-rendered HTML pages outside the API. For now, one landing page.

The landing page is public and read-only. It shows counts and model names, never a
prediction's content, and costs three queries whatever the data: one aggregate over
review items by queue and status, one over predictions by model version, and one for
the newest model versions.
"""

from typing import Any

from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from apps.predictions.models import Prediction
from apps.queues.models import Queue
from apps.registry.selectors import model_version_list
from apps.reviews.models import ItemStatus

MAX_MODEL_VERSIONS = 50


def _queue_rows() -> list[dict[str, Any]]:
    """Every queue with its review items counted by status, in status order.

    Count keys are prefixed so that no status can collide with a Queue field name.
    """
    counts = {
        f"n_{item_status}": Count("items", filter=Q(items__status=item_status))
        for item_status in ItemStatus.values
    }
    rows = Queue.objects.order_by("name").values("name").annotate(total=Count("items"), **counts)
    return [
        {
            "name": row["name"],
            "counts": [row[f"n_{item_status}"] for item_status in ItemStatus.values],
            "total": row["total"],
        }
        for row in map(dict, rows)
    ]


def _prediction_counts() -> dict[int, dict[str, int]]:
    """Predictions routed to review and auto-accepted, by model version id."""
    rows = (
        Prediction.objects.order_by()
        .values("model_version_id")
        .annotate(routed=Count("id", filter=Q(routed=True)), total=Count("id"))
    )
    return {
        row["model_version_id"]: {"routed": row["routed"], "auto": row["total"] - row["routed"]}
        for row in rows
    }


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    """The landing page: queues, prediction counts and registered model versions."""
    by_model = _prediction_counts()
    versions = list(model_version_list()[: MAX_MODEL_VERSIONS + 1])
    models = [
        {
            "ref": version.ref,
            "task": version.task.replace("_", " "),
            "queue": version.queue.name,
            "created_at": version.created_at,
            **by_model.get(version.id, {"routed": 0, "auto": 0}),
        }
        for version in versions[:MAX_MODEL_VERSIONS]
    ]
    context = {
        "statuses": ItemStatus.choices,
        "queues": _queue_rows(),
        "routed": sum(counts["routed"] for counts in by_model.values()),
        "auto_accepted": sum(counts["auto"] for counts in by_model.values()),
        "models": models,
        "more_models": len(versions) > MAX_MODEL_VERSIONS,
    }
    return render(request, "index.html", context)
