"""What the OpenAPI schema says about every endpoint: the contract's page and error
bodies.

drf-spectacular describes each view's success answer; the answers every endpoint shares
are added here, by rule, in one postprocessing hook (``SPECTACULAR_SETTINGS``), so that
no view can forget them:

- a list (a ``GET`` answering an array) answers the contract's page
  ``{"results": [...], "next": url | null}``;
- a secured operation may answer 401 (no or bad credentials) and 403 (the caller lacks
  the role);
- an operation with a request body or query parameters may answer 400, one with a body
  also 413 and 415; one with path parameters 404 (no such object in the caller's
  queues).

Answers only some operations give (409 for a lost lease, 404 for an unknown queue) are
declared by the view with :func:`error_responses`. Every error answer has the body
``{"error": {"code", "message", "details"}}`` (the ``Error`` component).
"""

from typing import Any

from drf_spectacular.utils import OpenApiResponse

ERROR_REF = {"$ref": "#/components/schemas/Error"}

ERROR_SCHEMA = {
    "type": "object",
    "description": "The body of every 4xx answer.",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string", "description": "A stable snake_case code."},
                "message": {"type": "string"},
                "details": {
                    "type": "object",
                    "additionalProperties": True,
                    "description": "For 400, each bad field's dotted path and what is wrong.",
                },
            },
        }
    },
}

DESCRIPTIONS = {
    400: "Invalid input: `details` names each bad field.",
    401: "No credentials, or bad ones.",
    403: "The caller lacks the role.",
    404: "No such object in the caller's queues.",
    409: "Conflict with the current state (a lost lease, already decided, a duplicate).",
    413: "The request body is too large.",
    415: "The body is not of a supported content type.",
}


def error_responses(*status_codes: int, **descriptions: str) -> dict[int, OpenApiResponse]:
    """``extend_schema`` responses for errors only some operations give, e.g.
    ``responses={200: ItemSerializer, **error_responses(409)}``; ``descriptions`` by
    ``"s409"`` replace the default wording."""
    return {
        code: OpenApiResponse(
            ERROR_REF, description=descriptions.get(f"s{code}", DESCRIPTIONS[code])
        )
        for code in status_codes
    }


def _error(code: int) -> dict[str, Any]:
    return {
        "description": DESCRIPTIONS[code],
        "content": {"application/json": {"schema": ERROR_REF}},
    }


def _page(items: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["results", "next"],
        "properties": {
            "results": items,
            "next": {"type": "string", "format": "uri", "nullable": True},
        },
    }


def _document_operation(method: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    ok = responses.get("200", {}).get("content", {}).get("application/json", {})
    if method == "get" and ok.get("schema", {}).get("type") == "array":
        ok["schema"] = _page(ok["schema"])
    locations = {p.get("in") for p in operation.get("parameters", [])}
    codes = set()
    if operation.get("security"):
        codes |= {401, 403}
    if "requestBody" in operation:
        codes |= {400, 413, 415}
    if "query" in locations:
        codes.add(400)
    if "path" in locations:
        codes.add(404)
    for code in codes:
        responses.setdefault(str(code), _error(code))
    operation["responses"] = dict(sorted(responses.items()))


def postprocess_shared_answers(result, generator, request, public):
    """drf-spectacular postprocessing hook: the page and error answers, by rule."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            if isinstance(operation, dict) and "responses" in operation:
                _document_operation(method, operation)
    return result
