import gc
from collections.abc import Iterator
from contextlib import contextmanager

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.roles import Role, role_permission
from apps.core.exceptions import ValidationFailed
from apps.core.openapi import error_responses
from apps.core.pagination import ResultsCursorPagination

from . import selectors
from .services import Outcome, predictions_ingest

CanSend = role_permission(Role.PRODUCER)
CanRead = role_permission(Role.PRODUCER, Role.ADMIN)
MAX_BATCH = 1000


class IntakeAnswerSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    external_id = serializers.CharField()
    model = serializers.CharField()
    status = serializers.ChoiceField(choices=["auto_accepted", "pending_review"])
    routed = serializers.BooleanField()
    reasons = serializers.ListField(child=serializers.CharField())
    review_item = serializers.IntegerField(allow_null=True)


class BulkAnswerSerializer(serializers.Serializer):
    results = serializers.ListField(
        child=serializers.JSONField(), help_text="An answer, or {'error': {...}}, per item."
    )
    created = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    errors = serializers.IntegerField()  # type: ignore[assignment]  # a contract name


class FinalSerializer(serializers.Serializer):
    label = serializers.CharField()  # type: ignore[assignment]  # a contract name
    source = serializers.ChoiceField(  # type: ignore[assignment]  # a contract name
        choices=["model", "reviewer", "escalation"]
    )
    decided_at = serializers.DateTimeField()


class PredictionOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    external_id = serializers.CharField()
    model = serializers.CharField(source="model_version.ref")
    status = serializers.SerializerMethodField()
    routed = serializers.BooleanField()
    reasons = serializers.ListField(child=serializers.CharField())
    selection_probability = serializers.FloatField(allow_null=True)
    review_item = serializers.SerializerMethodField()
    features = serializers.JSONField()
    context = serializers.JSONField()  # type: ignore[assignment]  # a contract name
    prediction = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    final = serializers.SerializerMethodField()

    @extend_schema_field(
        serializers.ChoiceField(
            choices=["auto_accepted", "pending_review", "in_review", "escalated", "decided"]
        )
    )
    def get_status(self, obj) -> str:
        return selectors.prediction_status(obj)

    def get_review_item(self, obj) -> int | None:
        return obj.review_item.id if obj.routed else None

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_prediction(self, obj) -> dict:
        return {"label": obj.label, "probabilities": obj.probabilities}

    @extend_schema_field(FinalSerializer(allow_null=True))
    def get_final(self, obj) -> dict | None:
        final = selectors.prediction_final(obj)
        return FinalSerializer(final).data if final else None


def _outcome_body(outcome: Outcome) -> dict:
    if outcome.error:
        return outcome.error.as_body()
    assert outcome.answer is not None  # an outcome without an error has its answer
    return outcome.answer


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a batch is parsed and stored.

    A batch of 1,000 allocates some 10^5 containers (the parsed body, clean copies,
    rows, answers) that all stay referenced until the answer is sent: collections keep
    scanning and promoting them in vain, and the older generations' collections then
    walk the whole process. None of it is cyclic garbage; reference counting frees it
    afterwards. Collections took a sixth of a batch's time (docs/performance.md).
    Process-wide, so threads share the pause; whoever paused it resumes it.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class PredictionListCreateApi(APIView):
    """Intake of one prediction or a batch, and lookup of the caller's predictions."""

    def get_permissions(self):
        return [CanSend() if self.request.method == "POST" else CanRead()]

    @extend_schema(
        operation_id="predictions_list",
        parameters=[
            OpenApiParameter("external_id", OpenApiTypes.STR),
            OpenApiParameter("model", OpenApiTypes.STR, description="Id or name:version."),
            OpenApiParameter("cursor", OpenApiTypes.STR),
        ],
        responses=PredictionOutputSerializer(many=True),
    )
    def get(self, request):
        qs = selectors.prediction_list(
            user=request.user,
            external_id=request.query_params.get("external_id"),
            model=request.query_params.get("model"),
        )
        paginator = ResultsCursorPagination()
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(PredictionOutputSerializer(page, many=True).data)

    @extend_schema(
        operation_id="predictions_create",
        request=OpenApiTypes.OBJECT,
        responses={
            201: IntakeAnswerSerializer,
            200: PolymorphicProxySerializer(
                component_name="IntakeAgainOrBulkAnswer",
                serializers=[IntakeAnswerSerializer, BulkAnswerSerializer],
                resource_type_field_name=None,
            ),
            **error_responses(
                409, s409="The same external_id was sent before with different content."
            ),
        },
        description=(
            "One prediction (201 new, 200 the same one sent again), or "
            "{'items': [...]} with up to 1,000 (200 with one result per item)."
        ),
    )
    def post(self, request):
        with _gc_paused():
            return self._post(request)

    def _post(self, request):
        body = request.data
        if not isinstance(body, dict):
            raise ValidationFailed("The body must be a JSON object.")
        if "items" not in body:
            (outcome,) = predictions_ingest(producer=request.user, items=[body])
            if outcome.error:
                raise outcome.error
            code = status.HTTP_201_CREATED if outcome.created else status.HTTP_200_OK
            return Response(outcome.answer, status=code)

        items = body["items"]
        if set(body) != {"items"}:
            extra = sorted(set(body) - {"items"})
            raise ValidationFailed(
                "A batch holds only 'items'.", details={k: "unknown field" for k in extra}
            )
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
            raise ValidationFailed(
                f"'items' must be a list of 1 to {MAX_BATCH} predictions.",
                details={"items": f"must hold 1 to {MAX_BATCH} predictions"},
            )
        outcomes = predictions_ingest(producer=request.user, items=items)
        errors = sum(1 for o in outcomes if o.error)
        created = sum(1 for o in outcomes if o.created)
        return Response(
            {
                "results": [_outcome_body(o) for o in outcomes],
                "created": created,
                "duplicates": len(outcomes) - created - errors,
                "errors": errors,
            }
        )


class PredictionDetailApi(APIView):
    permission_classes = [CanRead]

    @extend_schema(operation_id="predictions_retrieve", responses=PredictionOutputSerializer)
    def get(self, request, prediction_id: int):
        prediction = selectors.prediction_get(user=request.user, prediction_id=prediction_id)
        return Response(PredictionOutputSerializer(prediction).data)
