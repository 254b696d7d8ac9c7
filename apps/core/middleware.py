from django.conf import settings

from .exceptions import error_response


class BodySizeLimitMiddleware:
    """Refuse a body over ``MAX_BODY_BYTES`` with 413 before anything reads it."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.limit = settings.MAX_BODY_BYTES

    def __call__(self, request):
        length = request.META.get("CONTENT_LENGTH") or "0"
        try:
            size = int(length)
        except ValueError:
            return error_response("invalid_content_length", "Bad Content-Length header.", 400)
        if size > self.limit:
            return error_response(
                "body_too_large",
                f"The request body is {size} bytes; the limit is {self.limit}.",
                413,
                {"limit": self.limit},
            )
        return self.get_response(request)
