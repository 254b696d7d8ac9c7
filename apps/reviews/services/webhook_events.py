"""What reviews report to webhooks: a final decision and raised escalations.

Both run inside the caller's transaction (the one recording the change), so a
delivery exists exactly when its change commits. Webhooks knows nothing of reviews'
tables: the events are built here from plain values, and only when someone
subscribes (one query on the subscription table otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from apps.reviews.models import Decision, Escalation
from apps.webhooks.events import ItemEscalated, PredictionDecided
from apps.webhooks.services.outbox import webhook_events_queue


def webhooks_prediction_decided(*, decision: Decision) -> None:
    """Queue ``prediction.decided`` for a final human decision, in the caller's
    transaction. Reads the item, prediction and model version the caller loaded."""

    def events() -> list[PredictionDecided]:
        prediction = decision.item.prediction
        return [
            PredictionDecided(
                decision_id=decision.id,
                item_id=decision.item_id,
                prediction_id=prediction.id,
                external_id=prediction.external_id,
                model=prediction.model_version.ref,
                model_label=prediction.label,
                label=decision.label,
                source=decision.source,
                overridden=decision.overridden,
                reason_code=decision.reason_code or None,
                decided_at=decision.decided_at,
            )
        ]

    webhook_events_queue(kind=PredictionDecided, events=events, at=decision.decided_at)


def webhooks_items_escalated(*, item_ids: Sequence[int], at: datetime) -> None:
    """Queue ``item.escalated`` for the escalations raised on ``item_ids`` at ``at``, in
    the caller's transaction (which inserted them)."""
    if not item_ids:
        return

    def events() -> list[ItemEscalated]:
        rows = (
            Escalation.objects.filter(item_id__in=list(item_ids), raised_at=at)
            .order_by("id")
            .values(
                "id",
                "reason",
                "raised_at",
                "item_id",
                "item__prediction_id",
                "item__prediction__external_id",
                "item__prediction__model_version__name",
                "item__prediction__model_version__version",
            )
        )
        return [
            ItemEscalated(
                escalation_id=r["id"],
                item_id=r["item_id"],
                prediction_id=r["item__prediction_id"],
                external_id=r["item__prediction__external_id"],
                model=f"{r['item__prediction__model_version__name']}:"
                f"{r['item__prediction__model_version__version']}",
                reason=r["reason"],
                escalated_at=r["raised_at"],
            )
            for r in rows
        ]

    webhook_events_queue(kind=ItemEscalated, events=events, at=at)
