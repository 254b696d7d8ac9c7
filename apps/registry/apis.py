import base64
import binascii

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.roles import IsAdmin, Role, role_permission
from apps.core.exceptions import ValidationFailed
from apps.core.openapi import error_responses
from apps.core.pagination import ResultsCursorPagination
from apps.core.parsers import JSONParser, json_loads

from .selectors import model_version_get, model_version_list, reason_codes_by_model
from .services import model_version_register
from .spec import SpecError, validate_spec

# Models are read by the accounts that work with them: producers (what to send),
# reviewers and escalation managers (the reason codes of an override) and admins. A
# pipeline account reads labels and runs exports, nothing else (API.md).
CanReadModels = role_permission(Role.PRODUCER, Role.REVIEWER, Role.ESCALATION_MANAGER, Role.ADMIN)

MODEL_REF = OpenApiParameter(
    "ref", OpenApiTypes.STR, OpenApiParameter.PATH, description="Model id or name:version."
)


class ModelOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    ref = serializers.CharField()
    name = serializers.CharField()
    version = serializers.CharField()
    task = serializers.CharField()
    labels = serializers.ListField(child=serializers.CharField())
    features = serializers.JSONField()
    explainer = serializers.JSONField()
    routing = serializers.JSONField()
    queue = serializers.CharField(source="queue.name")
    artifact_sha256 = serializers.CharField()
    reason_codes = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    def get_reason_codes(self, version) -> list[str]:
        """The override reason codes of the model (by name, shared across versions)."""
        return self.context["reason_codes"].get(version.name, [])


def _output(versions, *, many: bool = False) -> dict | list:
    names = {v.name for v in versions} if many else {versions.name}
    return ModelOutputSerializer(
        versions, many=many, context={"reason_codes": reason_codes_by_model(names=names)}
    ).data


def _parse_registration(request) -> tuple[dict, bytes | None]:
    """The spec object and the artifact bytes, from JSON or from multipart."""
    data = request.data
    if request.content_type.startswith("multipart/"):
        raw_spec = data.get("spec")
        if hasattr(raw_spec, "read"):
            raw_spec = raw_spec.read()
        if not raw_spec:
            raise ValidationFailed("Missing the 'spec' part.", details={"spec": "required"})
        try:
            spec = json_loads(raw_spec)
        except (ValueError, RecursionError) as exc:
            raise ValidationFailed(
                "The 'spec' part is not JSON.", details={"spec": "must be a JSON object"}
            ) from exc
        upload = request.FILES.get("artifact")
        return spec, (upload.read() if upload else None)
    if not isinstance(data, dict):
        raise ValidationFailed("The body must be a JSON object.")
    encoded = data.get("artifact")
    if encoded is None:
        return data, None
    if not isinstance(encoded, str):
        raise ValidationFailed("Bad artifact.", details={"artifact": "must be a base64 string"})
    try:
        return data, base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValidationFailed(
            "Bad artifact.", details={"artifact": "is not valid base64"}
        ) from exc


class ModelListCreateApi(APIView):
    parser_classes = [JSONParser, MultiPartParser]

    def get_permissions(self):
        return [IsAdmin() if self.request.method == "POST" else CanReadModels()]

    @extend_schema(
        operation_id="models_list",
        responses=ModelOutputSerializer(many=True),
        parameters=[OpenApiParameter("cursor", OpenApiTypes.STR)],
    )
    def get(self, request):
        paginator = ResultsCursorPagination()
        page = paginator.paginate_queryset(model_version_list(), request, view=self)
        return paginator.get_paginated_response(_output(page, many=True))

    @extend_schema(
        operation_id="models_create",
        request={
            "application/json": OpenApiTypes.OBJECT,
            "multipart/form-data": inline_serializer(
                "ModelMultipart",
                {"spec": serializers.CharField(), "artifact": serializers.FileField()},
            ),
        },
        responses={
            201: ModelOutputSerializer,
            **error_responses(409, s409="This name:version is registered already."),
        },
    )
    def post(self, request):
        raw, artifact = _parse_registration(request)
        try:
            spec = validate_spec(raw, has_artifact=bool(artifact))
        except SpecError as exc:
            raise ValidationFailed("The model spec is invalid.", details=exc.details) from exc
        version = model_version_register(spec=spec, artifact=artifact, created_by=request.user)
        return Response(_output(version), status=status.HTTP_201_CREATED)


class ModelDetailApi(APIView):
    permission_classes = [CanReadModels]

    @extend_schema(
        operation_id="models_retrieve", parameters=[MODEL_REF], responses=ModelOutputSerializer
    )
    def get(self, request, ref: str):
        return Response(_output(model_version_get(ref=ref)))
