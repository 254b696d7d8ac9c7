"""The events webhooks report, as plain values, and the payload each one becomes.

The app whose change an event reports builds the event from its own rows; webhooks
never reads those rows (it sits below them). ``payload()`` is the event's ``data`` as
documented in docs/webhooks.md: the same keys and values for every receiver and every
attempt, timestamps in RFC 3339 UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from .models import WebhookEvent


def rfc3339(at: datetime) -> str:
    """``at`` in UTC, ending in ``Z``, with microseconds when it has them."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, kw_only=True)
class PredictionDecided:
    """A final human decision: a reviewer's accept or override, or a resolved escalation."""

    EVENT: ClassVar[str] = WebhookEvent.PREDICTION_DECIDED

    decision_id: int
    item_id: int
    prediction_id: int
    external_id: str
    model: str  # "name:version"
    model_label: str
    label: str
    source: str
    overridden: bool
    reason_code: str | None
    decided_at: datetime

    def payload(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "item_id": self.item_id,
            "prediction_id": self.prediction_id,
            "external_id": self.external_id,
            "model": self.model,
            "model_label": self.model_label,
            "label": self.label,
            "source": self.source,
            "overridden": self.overridden,
            "reason_code": self.reason_code,
            "decided_at": rfc3339(self.decided_at),
        }


@dataclass(frozen=True, kw_only=True)
class ItemEscalated:
    """An item handed to escalation managers, by a reviewer or automatically."""

    EVENT: ClassVar[str] = WebhookEvent.ITEM_ESCALATED

    escalation_id: int
    item_id: int
    prediction_id: int
    external_id: str
    model: str  # "name:version"
    reason: str
    escalated_at: datetime

    def payload(self) -> dict[str, Any]:
        return {
            "escalation_id": self.escalation_id,
            "item_id": self.item_id,
            "prediction_id": self.prediction_id,
            "external_id": self.external_id,
            "model": self.model,
            "reason": self.reason,
            "escalated_at": rfc3339(self.escalated_at),
        }
