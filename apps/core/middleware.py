import io

from django.conf import settings
from django.core.handlers.wsgi import LimitedStream

from .exceptions import error_response


class BodySizeLimitMiddleware:
    """Refuse a body over ``MAX_BODY_BYTES`` with 413 before anything reads it.

    A declared ``Content-Length`` is checked as it is (a negative or unreadable one is
    400). A chunked body has none: the server (gunicorn) decodes the chunks, and at most
    ``MAX_BODY_BYTES + 1`` of them are read here; more is 413, less becomes the
    request's body with its length set, as if it had been declared. A server that does
    not mark its input as terminated (``wsgi.input_terminated``) cannot say where a
    chunked body ends: such a request is 411, never read.
    """

    def __init__(self, get_response):
        self.get_response = get_response
        self.limit = settings.MAX_BODY_BYTES

    def __call__(self, request):
        if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            refusal = self._read_chunked(request)
            if refusal is not None:
                return refusal
        length = request.META.get("CONTENT_LENGTH") or "0"
        try:
            size = int(length)
        except ValueError:
            size = -1
        if size < 0:
            return error_response("invalid_content_length", "Bad Content-Length header.", 400)
        if size > self.limit:
            return self._too_large(f"The request body is {size} bytes")
        return self.get_response(request)

    def _too_large(self, what: str):
        return error_response(
            "body_too_large",
            f"{what}; the limit is {self.limit}.",
            413,
            {"limit": self.limit},
        )

    def _read_chunked(self, request):
        if not request.META.get("wsgi.input_terminated"):
            return error_response(
                "length_required", "A chunked body needs a server that ends it.", 411
            )
        body = request.META["wsgi.input"].read(self.limit + 1)
        if len(body) > self.limit:
            return self._too_large("The chunked request body is larger")
        request.META["CONTENT_LENGTH"] = str(len(body))
        # The request was built before its length was known (a stream of 0 bytes).
        request._stream = LimitedStream(io.BytesIO(body), len(body))
        return None
