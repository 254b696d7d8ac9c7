"""One error hierarchy and one exception handler.

Every 4xx answer carries the contract's body
``{"error": {"code": "<snake_case>", "message": "<text>", "details": {...}}}``.
The handler wraps DRF's own, so DRF keeps setting headers (``WWW-Authenticate``,
``Retry-After``) and status codes; only the body is rewritten.
"""

from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class ApplicationError(Exception):
    """A refusal the client can act on; rendered as the contract's error body."""

    status_code: int = status.HTTP_400_BAD_REQUEST
    code = "invalid"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.details = details or {}
        if status_code is not None:
            self.status_code = status_code

    def as_body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.details)


class ValidationFailed(ApplicationError):
    status_code = status.HTTP_400_BAD_REQUEST
    code = "invalid"


class NotFound(ApplicationError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class Conflict(ApplicationError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def error_response(code: str, message: str, status_code: int, details=None) -> JsonResponse:
    """A contract error body outside DRF (middleware, plain Django views)."""
    return JsonResponse(error_body(code, message, details), status=status_code)


_DRF_CODES = {
    exceptions.ParseError: ("malformed_body", None),
    exceptions.AuthenticationFailed: ("authentication_failed", None),
    exceptions.NotAuthenticated: ("not_authenticated", None),
    exceptions.PermissionDenied: ("permission_denied", None),
    exceptions.NotFound: ("not_found", None),
    exceptions.MethodNotAllowed: ("method_not_allowed", None),
    exceptions.NotAcceptable: ("not_acceptable", None),
    exceptions.UnsupportedMediaType: ("unsupported_media_type", None),
    exceptions.Throttled: ("throttled", None),
}


def flatten_errors(detail: Any, prefix: str = "") -> dict[str, str]:
    """DRF's nested error detail as ``{"dotted.path": "first message"}``."""
    if isinstance(detail, dict):
        flat: dict[str, str] = {}
        for key, value in detail.items():
            flat.update(flatten_errors(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(detail, list) and detail and all(isinstance(d, dict | list) for d in detail):
        flat = {}
        for i, value in enumerate(detail):
            flat.update(flatten_errors(value, f"{prefix}.{i}" if prefix else str(i)))
        return flat
    return {prefix or "non_field_errors": _message(detail)}


def _message(detail: Any) -> str:
    if isinstance(detail, list | tuple) and detail:
        return _message(detail[0])
    if isinstance(detail, dict):
        return "Invalid input."
    return str(detail)


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, ApplicationError):
        return Response(exc.as_body(), status=exc.status_code)
    if isinstance(exc, RequestDataTooBig):
        return Response(
            error_body("body_too_large", "The request body is too large."),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    if isinstance(exc, exceptions.ValidationError):
        response.data = error_body("invalid", "Invalid input.", flatten_errors(exc.detail))
        return response
    code = next((c for cls, (c, _) in _DRF_CODES.items() if isinstance(exc, cls)), None)
    response.data = error_body(code or exc.default_code, _message(exc.detail))
    return response


def validated(serializer_class, data) -> dict:
    """``data`` checked by an input serializer; ValidationFailed naming each bad field."""
    if not isinstance(data, dict):
        raise ValidationFailed("The body must be a JSON object.")
    serializer = serializer_class(data=data)
    if not serializer.is_valid():
        raise ValidationFailed("Invalid input.", details=flatten_errors(serializer.errors))
    return serializer.validated_data
