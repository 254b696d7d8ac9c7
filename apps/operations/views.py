"""Health and metrics: plain Django views, outside the versioned API."""

import hmac

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from apps.core.exceptions import error_response

from .metrics import DatabaseCollector


def _database_state() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception:
        return "unavailable"


def _broker_state() -> str:
    if not settings.CELERY_BROKER_URL:
        return "embedded"
    from reviewqueue.celery import app

    try:
        with app.connection_for_write(settings.CELERY_BROKER_URL) as conn:
            conn.ensure_connection(max_retries=1, timeout=1)
        return "ok"
    except Exception:
        return "unavailable"


@require_GET
def healthz(request):
    """200 while the database answers; the broker's state is reported, not required."""
    state = {"database": _database_state(), "broker": _broker_state()}
    return JsonResponse(state, status=200 if state["database"] == "ok" else 503)


@require_GET
def metrics(request):
    token = settings.REVIEW_METRICS_TOKEN
    if token:
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(sent.encode(), token.encode()):
            return error_response("not_authenticated", "Metrics need the bearer token.", 401)
    registry = CollectorRegistry()
    registry.register(DatabaseCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
