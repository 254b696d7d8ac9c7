"""What the review endpoints answer with: a review item (its prediction without sensitive
features, its lease, explanation and last return) and an escalation.

``item_output`` builds the item's body directly, for the claim path's speed; the
serializers declare the same shape for the schema (a test holds the two equal).
"""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.explanations.selectors import explanation_for_reviewer

from . import selectors
from .models import ItemStatus, ReviewItem


def public_features(item: ReviewItem) -> dict:
    """The prediction's features without the sensitive ones: reviewers never see them
    (the registry's rule, ``ModelVersion.public_features``)."""
    return item.prediction.model_version.public_features(item.prediction.features)


def prediction_view(item: ReviewItem) -> dict:
    p = item.prediction
    return {
        "id": p.id,
        "external_id": p.external_id,
        "model": p.model_version.ref,
        "features": public_features(item),
        "context": p.context,
        "prediction": {"label": p.label, "probabilities": p.probabilities},
        "created_at": p.created_at,
    }


class LeaseSerializer(serializers.Serializer):
    token = serializers.UUIDField()
    expires_at = serializers.DateTimeField()


_DATETIME = serializers.DateTimeField()
_UUID = serializers.UUIDField()


def _item_explanation(item: ReviewItem) -> dict | None:
    explanation = getattr(item.prediction, "explanation", None)
    if explanation is None:
        return None
    return explanation_for_reviewer(
        explanation=explanation,
        features=item.prediction.model_version.features,
        values=item.prediction.features,
    )


class ItemReturnSerializer(serializers.Serializer):
    """The item's latest return from escalation; who returned it is not shown."""

    comment = serializers.CharField(
        allow_blank=True, help_text="What the escalation manager wrote for the next reviewer."
    )
    returned_at = serializers.DateTimeField(help_text="When the item came back to the queue.")


def _item_returned(item: ReviewItem) -> dict | None:
    returned = selectors.review_item_return(item=item)
    if returned is None:
        return None
    return {
        "comment": str(returned.comment),
        "returned_at": _DATETIME.to_representation(returned.returned_at),
    }


def item_output(item: ReviewItem) -> dict:
    """What ``ItemOutputSerializer`` renders for ``item``, built directly; dates and
    the token go through DRF's own field conversions."""
    lease = None
    if (
        item.status == ItemStatus.LEASED
        and item.lease_token is not None
        and item.lease_expires_at is not None
    ):
        lease = {
            "token": _UUID.to_representation(item.lease_token),
            "expires_at": _DATETIME.to_representation(item.lease_expires_at),
        }
    return {
        "id": int(item.id),
        "status": str(item.status),
        "queue": str(item.queue.name),
        "prediction": prediction_view(item),
        "reasons": [None if reason is None else str(reason) for reason in item.reasons],
        "due_at": _DATETIME.to_representation(item.due_at),
        "priority": float(item.priority),
        "lease": lease,
        "explanation": _item_explanation(item),
        "explanation_status": str(item.explanation_status),
        "returned": _item_returned(item),
    }


class ItemOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=ItemStatus.values)
    queue = serializers.CharField(source="queue.name")
    prediction = serializers.SerializerMethodField()
    reasons = serializers.ListField(child=serializers.CharField())
    due_at = serializers.DateTimeField()
    priority = serializers.FloatField()
    lease = serializers.SerializerMethodField()
    explanation = serializers.SerializerMethodField()
    explanation_status = serializers.CharField()
    returned = serializers.SerializerMethodField(
        help_text="The item's latest return from escalation, with the manager's comment "
        "for its next reviewer; null if it was never returned."
    )

    def to_representation(self, instance) -> dict:
        # The declared fields above are the schema; this builds the same answer
        # without DRF copying and walking ten field objects on every claim and
        # decision (the hot path). tests/reviews compare the two.
        return item_output(instance)

    def to_representation_by_fields(self, instance) -> dict:
        """DRF's own rendering of the declared fields (what item_output must equal)."""
        return super().to_representation(instance)

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_prediction(self, item) -> dict:
        return prediction_view(item)

    @extend_schema_field(LeaseSerializer(allow_null=True))
    def get_lease(self, item) -> dict | None:
        if item.status != ItemStatus.LEASED or item.lease_token is None:
            return None
        return LeaseSerializer(
            {"token": item.lease_token, "expires_at": item.lease_expires_at}
        ).data

    @extend_schema_field(serializers.DictField(allow_null=True))
    def get_explanation(self, item) -> dict | None:
        return _item_explanation(item)

    @extend_schema_field(ItemReturnSerializer(allow_null=True))
    def get_returned(self, item) -> dict | None:
        returned = selectors.review_item_return(item=item)
        if returned is None:
            return None
        return ItemReturnSerializer(
            {"comment": returned.comment, "returned_at": returned.returned_at}
        ).data


class EscalationOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    item = serializers.IntegerField(source="item_id")
    prediction = serializers.SerializerMethodField()
    reason = serializers.CharField()
    comment = serializers.CharField()
    raised_by = serializers.SerializerMethodField()
    raised_at = serializers.DateTimeField()
    status = serializers.CharField()
    lateness_seconds = serializers.FloatField()
    lease = serializers.SerializerMethodField()
    closed_at = serializers.DateTimeField(allow_null=True)
    closing_comment = serializers.CharField()

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_prediction(self, escalation) -> dict:
        return prediction_view(escalation.item)

    def get_raised_by(self, escalation) -> str | None:
        return escalation.raised_by.get_username() if escalation.raised_by else None

    @extend_schema_field(LeaseSerializer(allow_null=True))
    def get_lease(self, escalation) -> dict | None:
        request = self.context.get("request")
        if escalation.lease_token is None or request is None:
            return None
        if escalation.claimed_by_id != request.user.id:
            return None
        return LeaseSerializer(
            {"token": escalation.lease_token, "expires_at": escalation.lease_expires_at}
        ).data
