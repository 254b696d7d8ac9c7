from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response

from .exceptions import ValidationFailed


def _invalid_cursor() -> ValidationFailed:
    return ValidationFailed(
        "Invalid cursor.",
        code="invalid_cursor",
        details={"cursor": "must be a `next` link's cursor, as it was given"},
    )


class ResultsCursorPagination(CursorPagination):
    """The contract's page: ``{"results": [...], "next": url | null}``, stable under
    concurrent inserts because it pages by key, not by offset.

    A cursor is the client's to send back, so it is input like any other: one that does
    not decode, or whose position is not a value of the ordering's field, is 400
    ``invalid_cursor`` (DRF would answer 404, or fail in the query)."""

    ordering: str | tuple[str, ...] = "-id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except NotFound as exc:
            raise _invalid_cursor() from exc

    def paginate_queryset(self, queryset, request, view=None):
        try:
            return super().paginate_queryset(queryset, request, view)
        except (ValueError, TypeError, OverflowError, DjangoValidationError, DataError) as exc:
            raise _invalid_cursor() from exc

    def get_paginated_response(self, data):
        return Response({"results": data, "next": self.get_next_link()})

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["results", "next"],
            "properties": {
                "results": schema,
                "next": {"type": "string", "nullable": True, "format": "uri"},
            },
        }
