from rest_framework.pagination import CursorPagination
from rest_framework.response import Response


class ResultsCursorPagination(CursorPagination):
    """The contract's page: ``{"results": [...], "next": url | null}``, stable under
    concurrent inserts because it pages by key, not by offset."""

    ordering = "-id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000

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
