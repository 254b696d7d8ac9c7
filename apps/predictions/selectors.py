"""Reads of predictions, scoped to what the caller may see."""

from typing import Any

from django.db.models import QuerySet

from apps.accounts.roles import Role, user_roles
from apps.core.exceptions import NotFound
from apps.registry.selectors import model_version_get
from apps.reviews.models import ItemStatus

from .models import Prediction

# The prediction's status as clients see it, from its review item's state.
_STATUS_BY_ITEM: dict[str, str] = {
    ItemStatus.PENDING: "pending_review",
    ItemStatus.READY: "pending_review",
    ItemStatus.LEASED: "in_review",
    ItemStatus.ESCALATED: "escalated",
    ItemStatus.DECIDED: "decided",
}


def prediction_status(prediction: Prediction) -> str:
    if not prediction.routed:
        return "auto_accepted"
    return _STATUS_BY_ITEM[prediction.review_item.status]


def prediction_final(prediction: Prediction) -> dict[str, Any] | None:
    """The final decision: the model's for an auto-accepted prediction, the human one
    once a routed prediction is decided, None before."""
    if not prediction.routed:
        return {"label": prediction.label, "source": "model", "decided_at": prediction.created_at}
    decision = getattr(prediction.review_item, "decision", None)
    if decision is None:
        return None
    return {"label": decision.label, "source": decision.source, "decided_at": decision.decided_at}


def predictions_visible_to(*, user) -> QuerySet[Prediction]:
    """Admins see every prediction; a producer sees the ones it sent."""
    qs = Prediction.objects.select_related("model_version", "review_item__decision")
    if Role.ADMIN in user_roles(user):
        return qs
    return qs.filter(producer=user)


def prediction_list(*, user, external_id: str | None = None, model: str | None = None):
    qs = predictions_visible_to(user=user)
    if external_id is not None:
        qs = qs.filter(external_id=external_id)
    if model is not None:
        try:
            qs = qs.filter(model_version=model_version_get(ref=model))
        except NotFound:
            return qs.none()
    return qs


MAX_ID = 2**63 - 1


def prediction_get(*, user, prediction_id: int) -> Prediction:
    found = None
    if 0 < prediction_id <= MAX_ID:
        found = predictions_visible_to(user=user).filter(id=prediction_id).first()
    if found is None:
        raise NotFound(f"No prediction {prediction_id}.", code="prediction_not_found")
    return found
