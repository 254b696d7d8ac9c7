"""The label feed and export endpoints (role pipeline): one thin view per operation."""

from django.http import FileResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.roles import Role, role_permission
from apps.core.exceptions import NotFound, validated
from apps.core.fields import TextField
from apps.core.pagination import ResultsCursorPagination
from apps.core.renderers import JSONRenderer
from apps.queues.scope import queue_scope
from apps.registry.selectors import model_version_get
from apps.reviews.models import DecisionSource

from . import services
from .cursor import cursor_parse
from .formats import CONTENT_TYPES, ENCODERS, EXTENSIONS, LabelValues
from .models import ExportJob
from .selectors import LabelFilter, label_models, label_page, label_rows

IsPipeline = role_permission(Role.PIPELINE)


def file_responses(description: str) -> dict:
    """A 200 in each label format's media type (the schema of a file: binary)."""
    return {
        (200, media_type.split(";")[0]): OpenApiResponse(
            OpenApiTypes.BINARY, description=description
        )
        for media_type in CONTENT_TYPES.values()
    }


FORMATS = list(ENCODERS)
MAX_LIMIT = 100_000


class FilterInputSerializer(serializers.Serializer):
    after = TextField(required=False, allow_blank=True, max_length=64)
    model = TextField(required=False, max_length=160)
    source = serializers.ChoiceField(  # type: ignore[assignment]  # a contract name
        choices=DecisionSource.values, required=False
    )

    def validate_after(self, value: str):
        return cursor_parse(value)

    def validate_model(self, value: str):
        try:
            return model_version_get(ref=value)
        except NotFound as exc:
            raise serializers.ValidationError("no such model version") from exc


class QueryBooleanField(serializers.BooleanField):
    """``true`` or ``false`` in a query string, nothing else (not ``1``, ``yes``, ``null``)."""

    def to_internal_value(self, data):
        if data not in ("true", "false"):
            self.fail("invalid", input=data)
        return data == "true"


class JSONBooleanField(serializers.BooleanField):
    """A JSON ``true`` or ``false`` (``null`` where allowed), not ``0``, ``1`` or text."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class FeedInputSerializer(FilterInputSerializer):
    overridden = QueryBooleanField(required=False)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=MAX_LIMIT)
    format = serializers.ChoiceField(choices=FORMATS, required=False, default="jsonl")


def _label_filter(user, data: dict) -> LabelFilter:
    model = data.get("model")
    return LabelFilter(
        model_version_id=model.id if model is not None else None,
        source=data.get("source"),
        overridden=data.get("overridden"),
        queue_ids=queue_scope(user),
    )


class PipelineApi(APIView):
    permission_classes = [IsPipeline]

    def perform_content_negotiation(self, request, force=False):
        # ``format`` names the labels' format, not a DRF renderer; errors are JSON.
        renderer = JSONRenderer()
        return renderer, renderer.media_type


class LabelFeedApi(PipelineApi):
    @extend_schema(
        operation_id="labels_list",
        parameters=[
            OpenApiParameter("after", str, description="X-Next-Cursor of the previous page."),
            OpenApiParameter("limit", int, description="1 to 100,000; default 1,000."),
            OpenApiParameter("model", str, description="A model version: id or name:version."),
            OpenApiParameter("format", str, enum=FORMATS, description="Default jsonl."),
            OpenApiParameter("source", str, enum=DecisionSource.values),
            OpenApiParameter("overridden", bool),
            OpenApiParameter(
                "X-Next-Cursor",
                str,
                location=OpenApiParameter.HEADER,
                response=[200],
                description="The cursor to send as `after` next.",
            ),
        ],
        responses=file_responses(
            "Labels as JSONL (one object per line), CSV or Parquet, streamed."
        ),
    )
    def get(self, request):
        data = validated(FeedInputSerializer, request.query_params.dict())
        page = label_page(
            after=data.get("after") or cursor_parse(None),
            limit=data.get("limit") or 1000,
            filters=_label_filter(request.user, data),
        )
        fmt = data["format"]
        values = LabelValues(label_models())
        rows = (values(row) for row in label_rows(page=page))
        response = StreamingHttpResponse(ENCODERS[fmt](rows), content_type=CONTENT_TYPES[fmt])
        response["X-Next-Cursor"] = str(page.next_cursor)
        response["Cache-Control"] = "no-store"
        if fmt != "jsonl":
            response["Content-Disposition"] = f'attachment; filename="labels.{EXTENSIONS[fmt]}"'
        return response


class ExportInputSerializer(FilterInputSerializer):
    overridden = JSONBooleanField(required=False, allow_null=True, default=None)
    format = serializers.ChoiceField(choices=FORMATS)


class ExportOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.CharField()
    format = serializers.CharField()
    model = serializers.SerializerMethodField()
    after = serializers.CharField()
    progress = serializers.FloatField()
    rows = serializers.IntegerField()
    total = serializers.IntegerField(allow_null=True)
    next_cursor = serializers.CharField()
    size_bytes = serializers.IntegerField(allow_null=True)
    error = serializers.CharField()
    download_url = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)

    def get_model(self, job) -> str | None:
        return job.model_version.ref if job.model_version_id else None

    def get_download_url(self, job) -> str | None:
        return services.export_download_url(job=job, request=self.context.get("request"))


class ExportListCreateApi(PipelineApi):
    @extend_schema(
        operation_id="exports_create",
        request=ExportInputSerializer,
        responses={202: ExportOutputSerializer},
    )
    def post(self, request):
        data = validated(ExportInputSerializer, request.data)
        job = services.export_create(
            user=request.user,
            request=services.ExportRequest(
                format=data["format"],
                model_version=data.get("model"),
                after=data.get("after") or cursor_parse(None),
                source=data.get("source"),
                overridden=data.get("overridden"),
            ),
        )
        job = ExportJob.objects.select_related("model_version").get(id=job.id)
        body = ExportOutputSerializer(job, context={"request": request}).data
        return Response(
            body,
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": f"/api/v1/exports/{job.id}/"},
        )

    @extend_schema(
        operation_id="exports_list",
        parameters=[OpenApiParameter("cursor", OpenApiTypes.STR)],
        responses=ExportOutputSerializer(many=True),
    )
    def get(self, request):
        paginator = ResultsCursorPagination()
        paginator.ordering = "-created_at"
        jobs = ExportJob.objects.filter(owner=request.user).select_related("model_version")
        page = paginator.paginate_queryset(jobs, request, view=self)
        data = ExportOutputSerializer(page, many=True, context={"request": request}).data
        return paginator.get_paginated_response(data)


class ExportDetailApi(PipelineApi):
    @extend_schema(operation_id="exports_retrieve", responses=ExportOutputSerializer)
    def get(self, request, export_id):
        job = services.export_get(user=request.user, job_id=export_id)
        return Response(ExportOutputSerializer(job, context={"request": request}).data)


class ExportDownloadApi(PipelineApi):
    @extend_schema(
        operation_id="exports_download",
        parameters=[OpenApiParameter("token", str, required=True)],
        responses=file_responses("The export file, in the export's format."),
    )
    def get(self, request, export_id):
        job, path = services.export_file(
            user=request.user, job_id=export_id, token=request.query_params.get("token", "")
        )
        return FileResponse(
            path.open("rb"),
            as_attachment=True,
            filename=f"labels-{job.id}.{EXTENSIONS[job.format]}",
            content_type=CONTENT_TYPES[job.format],
        )
