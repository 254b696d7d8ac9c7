"""Prometheus metrics read from PostgreSQL at scrape time.

The database is the source of truth and is shared by every web process and worker, so
gauges computed from it are the same whichever process answers the scrape.
"""

from django.db.models import Count, Min
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from apps.predictions.models import Prediction
from apps.reviews.models import ItemStatus, ReviewItem


class DatabaseCollector:
    def collect(self):
        predictions = CounterMetricFamily(
            "reviewqueue_predictions", "Predictions received.", labels=["model", "routed"]
        )
        rows = Prediction.objects.values(
            "model_version__name", "model_version__version", "routed"
        ).annotate(n=Count("id"))
        for row in rows:
            model = f"{row['model_version__name']}:{row['model_version__version']}"
            predictions.add_metric([model, str(row["routed"]).lower()], row["n"])
        yield predictions

        items = GaugeMetricFamily(
            "reviewqueue_review_items",
            "Review items by queue and status.",
            labels=["queue", "status"],
        )
        oldest = GaugeMetricFamily(
            "reviewqueue_oldest_ready_item_age_seconds",
            "Age of the oldest claimable item per queue.",
            labels=["queue"],
        )
        now = timezone.now()
        rows = ReviewItem.objects.values("queue__name", "status").annotate(
            n=Count("id"), first=Min("created_at")
        )
        for row in rows:
            items.add_metric([row["queue__name"], row["status"]], row["n"])
            if row["status"] == ItemStatus.READY:
                oldest.add_metric([row["queue__name"]], (now - row["first"]).total_seconds())
        yield items
        yield oldest
