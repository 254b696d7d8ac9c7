"""Security headers of the HTML pages.

Every HTML answer carries a Content-Security-Policy that admits scripts and styles only
from this server: no inline script, no ``eval``, no plugin, no framing. The review
screens keep their JavaScript in static files (htmx and ``static/js/ui.js``), so a
payload that slips into a page cannot run. Paths in ``CSP_EXEMPT_PATHS`` (Swagger UI's
page, which ships an inline script) are left as they are.
"""

from django.conf import settings

POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.exempt = tuple(getattr(settings, "CSP_EXEMPT_PATHS", ()))

    def __call__(self, request):
        response = self.get_response(request)
        content_type = response.get("Content-Type", "")
        if (
            content_type.startswith(("text/html", "image/svg+xml"))
            and "Content-Security-Policy" not in response
            and not request.path.startswith(self.exempt)
        ):
            response["Content-Security-Policy"] = POLICY
        return response
