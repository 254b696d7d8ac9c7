"""The review queue and escalation endpoints: one thin view per operation."""

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.roles import Role, role_permission
from apps.audit.models import Action
from apps.audit.services import Event, audit_record
from apps.core.exceptions import ValidationFailed, validated
from apps.core.fields import TextField
from apps.core.openapi import error_responses
from apps.core.pagination import ResultsCursorPagination

from . import selectors
from .models import MAX_COMMENT, Escalation, ReviewItem
from .outputs import EscalationOutputSerializer, ItemOutputSerializer
from .services import decisions, escalations, leases

CanReview = role_permission(Role.REVIEWER, Role.ESCALATION_MANAGER)
CanManage = role_permission(Role.ESCALATION_MANAGER)


# A write under a lease: the lease may be lost (expired, or not the caller's) or the
# object already moved on.
LEASED_ITEM_ANSWERS = {200: ItemOutputSerializer, **error_responses(409)}
ESCALATION_ANSWERS = {200: EscalationOutputSerializer, **error_responses(409)}


class QueueApi(APIView):
    """Base for queue endpoints: refusals of authenticated callers are audited."""

    permission_classes = [CanReview]

    def permission_denied(self, request, message=None, code=None):
        if request.user and request.user.is_authenticated:
            audit_record(
                event=Event(
                    Action.DENIED,
                    request.user,
                    data={"method": request.method, "path": request.path},
                ),
                at=timezone.now(),
            )
        super().permission_denied(request, message=message, code=code)


def _item_response(item: ReviewItem) -> Response:
    return Response(ItemOutputSerializer(item).data)


class ClaimInputSerializer(serializers.Serializer):
    queue = TextField(required=False, max_length=100)


class QueueClaimApi(QueueApi):
    @extend_schema(
        operation_id="queue_claim",
        request=ClaimInputSerializer,
        responses={
            200: ItemOutputSerializer,
            204: None,
            **error_responses(404, s404="No queue of that name among the caller's."),
        },
    )
    def post(self, request):
        data = validated(ClaimInputSerializer, request.data)
        item = leases.review_item_claim(user=request.user, queue=data.get("queue"))
        if item is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return _item_response(item)


def comment_field() -> TextField:
    """An optional comment, at most ``MAX_COMMENT`` characters (the services' limit)."""
    return TextField(required=False, allow_blank=True, max_length=MAX_COMMENT)


class TokenInputSerializer(serializers.Serializer):
    lease_token = TextField(max_length=100)


class ReviewHeartbeatApi(QueueApi):
    @extend_schema(
        operation_id="reviews_heartbeat",
        request=TokenInputSerializer,
        responses=LEASED_ITEM_ANSWERS,
    )
    def post(self, request, item_id: int):
        data = validated(TokenInputSerializer, request.data)
        item = leases.review_item_heartbeat(
            user=request.user, item_id=item_id, token=data["lease_token"]
        )
        return _item_response(item)


class ReviewReleaseApi(QueueApi):
    @extend_schema(
        operation_id="reviews_release", request=TokenInputSerializer, responses=LEASED_ITEM_ANSWERS
    )
    def post(self, request, item_id: int):
        data = validated(TokenInputSerializer, request.data)
        item = leases.review_item_release(
            user=request.user, item_id=item_id, token=data["lease_token"]
        )
        return _item_response(item)


class DecideInputSerializer(TokenInputSerializer):
    label = TextField(max_length=200)  # type: ignore[assignment]  # a contract name
    reason_code = TextField(required=False, allow_blank=True, max_length=64)
    comment = comment_field()


class ReviewDecideApi(QueueApi):
    @extend_schema(
        operation_id="reviews_decide", request=DecideInputSerializer, responses=LEASED_ITEM_ANSWERS
    )
    def post(self, request, item_id: int):
        data = validated(DecideInputSerializer, request.data)
        item = decisions.review_item_decide(
            user=request.user,
            item_id=item_id,
            token=data["lease_token"],
            label=data["label"],
            reason_code=data.get("reason_code"),
            comment=data.get("comment"),
        )
        return _item_response(item)


class EscalateInputSerializer(TokenInputSerializer):
    reason = TextField(max_length=64)
    comment = comment_field()


class ReviewEscalateApi(QueueApi):
    @extend_schema(
        operation_id="reviews_escalate",
        request=EscalateInputSerializer,
        responses=LEASED_ITEM_ANSWERS,
    )
    def post(self, request, item_id: int):
        data = validated(EscalateInputSerializer, request.data)
        item = decisions.review_item_escalate(
            user=request.user,
            item_id=item_id,
            token=data["lease_token"],
            reason=data["reason"],
            comment=data.get("comment"),
        )
        return _item_response(item)


class EscalationApi(QueueApi):
    permission_classes = [CanManage]


def _escalation_response(request, escalation: Escalation) -> Response:
    return Response(EscalationOutputSerializer(escalation, context={"request": request}).data)


class EscalationListApi(EscalationApi):
    @extend_schema(
        operation_id="escalations_list",
        parameters=[
            OpenApiParameter("status", OpenApiTypes.STR, enum=selectors.ESCALATION_STATUSES),
            OpenApiParameter("cursor", OpenApiTypes.STR),
        ],
        responses=EscalationOutputSerializer(many=True),
    )
    def get(self, request):
        wanted = request.query_params.get("status")
        if wanted is not None and wanted not in selectors.ESCALATION_STATUSES:
            raise ValidationFailed(
                "Unknown status.",
                details={"status": f"must be one of {selectors.ESCALATION_STATUSES!r}"},
            )
        paginator = EscalationPagination()
        page = paginator.paginate_queryset(
            selectors.escalation_list(user=request.user, status=wanted), request, view=self
        )
        data = EscalationOutputSerializer(page, many=True, context={"request": request}).data
        return paginator.get_paginated_response(data)


class EscalationPagination(ResultsCursorPagination):
    ordering = ("raised_at", "id")


class EscalationClaimApi(EscalationApi):
    @extend_schema(
        operation_id="escalations_claim",
        request=None,
        responses=ESCALATION_ANSWERS,
    )
    def post(self, request, escalation_id: int):
        escalation = escalations.escalation_claim(user=request.user, escalation_id=escalation_id)
        return _escalation_response(request, escalation)


class ResolveInputSerializer(serializers.Serializer):
    label = TextField(max_length=200)  # type: ignore[assignment]  # a contract name
    comment = comment_field()
    lease_token = TextField(required=False, max_length=100)


class EscalationResolveApi(EscalationApi):
    @extend_schema(
        operation_id="escalations_resolve",
        request=ResolveInputSerializer,
        responses=ESCALATION_ANSWERS,
    )
    def post(self, request, escalation_id: int):
        data = validated(ResolveInputSerializer, request.data)
        escalation = escalations.escalation_resolve(
            user=request.user,
            escalation_id=escalation_id,
            label=data["label"],
            comment=data.get("comment"),
            token=data.get("lease_token"),
        )
        return _escalation_response(request, escalation)


class ReturnInputSerializer(serializers.Serializer):
    comment = comment_field()
    lease_token = TextField(required=False, max_length=100)


class EscalationReturnApi(EscalationApi):
    @extend_schema(
        operation_id="escalations_return",
        request=ReturnInputSerializer,
        responses=ESCALATION_ANSWERS,
    )
    def post(self, request, escalation_id: int):
        data = validated(ReturnInputSerializer, request.data)
        escalation = escalations.escalation_return(
            user=request.user,
            escalation_id=escalation_id,
            comment=data.get("comment"),
            token=data.get("lease_token"),
        )
        return _escalation_response(request, escalation)
