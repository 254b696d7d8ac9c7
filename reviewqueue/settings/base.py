"""Settings shared by every environment, read from the environment (django-environ).

The embedded default needs nothing: an SQLite file and in-process tasks. Setting
``DATABASE_URL`` and ``CELERY_BROKER_URL`` switches to real servers.
"""

from pathlib import Path

import environ
from kombu import Queue

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()

SECRET_KEY = env("DJANGO_SECRET_KEY", default="")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "apps.core",
    "apps.queues",
    "apps.accounts",
    "apps.registry",
    "apps.predictions",
    "apps.reviews",
    "apps.audit",
    "apps.explanations",
    "apps.ui",
    "apps.labels",
    "apps.webhooks",
    "apps.operations",
]

MIDDLEWARE = [
    "apps.core.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "apps.ui.middleware.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "reviewqueue.urls"
WSGI_APPLICATION = "reviewqueue.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'reviewqueue.sqlite3'}"),
}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DJANGO_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default: one file shared by gunicorn, the worker and beat. Writers take
    # the write lock when their transaction begins (IMMEDIATE: no deadlock upgrading a
    # read lock) and wait up to ``timeout`` seconds for it; with the write-ahead log,
    # readers and the writer do not block each other.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# Browser sessions: the review screens log in at /login/; a session ends after
# REVIEW_SESSION_SECONDS (a working day) or when the browser closes.
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/queues/"
LOGOUT_REDIRECT_URL = "/login/"
SESSION_COOKIE_AGE = env.int("REVIEW_SESSION_SECONDS", default=9 * 3600)
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# The Content-Security-Policy of HTML pages (apps.ui.middleware): scripts only from
# this server, never inline. Swagger UI (/api/docs/) ships an inline script; it keeps
# its own page as it is.
CSP_EXEMPT_PATHS = ("/api/docs/",)

# Bodies above this size are refused with 413 before anything reads them.
MAX_BODY_BYTES = env.int("MAX_BODY_BYTES", default=10 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_BODY_BYTES
FILE_UPLOAD_MAX_MEMORY_SIZE = MAX_BODY_BYTES

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: its WWW-Authenticate header makes a missing credential a 401.
        # DRF's token authentication that also reads the caller's roles and queues.
        "apps.accounts.authentication.CallerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["apps.core.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["apps.core.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "apps.core.pagination.ResultsCursorPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "apps.core.exceptions.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "reviewqueue API",
    "DESCRIPTION": "Human-in-the-loop review of machine-learning predictions.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # The contract's page and error answers, added to every operation by rule.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "apps.core.openapi.postprocess_shared_answers",
    ],
    # Swagger UI served from this server, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Celery: with no broker configured, tasks run in-process (the embedded default).
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"
# A plain `celery -A reviewqueue worker` consumes every queue; heavy work can be given
# its own workers with `-Q explanations`.
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_QUEUES = (Queue("celery"), Queue("explanations"))
CELERY_TASK_ROUTES = {"reviews.explain_items": {"queue": "explanations"}}
# A broker outage must not hang the request that enqueues: give up fast, PostgreSQL
# keeps the truth and the sweeper re-enqueues.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2}
CELERY_BROKER_CONNECTION_TIMEOUT = 2
# An unacknowledged message (a worker killed mid-task) is delivered again after this.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=600),
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1

# Periodic work (celery beat). PostgreSQL holds the state; these only move it on. The SLA
# check's period is the longest an item may stay past its SLA before it is escalated.
REVIEW_SLA_CHECK_SECONDS = env.float("REVIEW_SLA_CHECK_SECONDS", default=30.0)
CELERY_BEAT_SCHEDULE = {
    "expire-leases": {"task": "reviews.expire_leases", "schedule": 15.0},
    "escalate-sla-breaches": {
        "task": "reviews.escalate_sla_breaches",
        "schedule": REVIEW_SLA_CHECK_SECONDS,
    },
    "sweep-explanations": {"task": "reviews.sweep_explanations", "schedule": 30.0},
    "sweep-exports": {"task": "labels.sweep_exports", "schedule": 60.0},
    "sweep-webhooks": {"task": "webhooks.sweep", "schedule": 10.0},
}

# Label exports: where files are built (shared by web processes and workers), how long
# a download link lives, and how long a build may go without progress before another
# worker takes it over.
EXPORT_ROOT = env.path("EXPORT_ROOT", default=BASE_DIR / "var" / "exports")
EXPORT_LINK_SECONDS = env.int("EXPORT_LINK_SECONDS", default=3600)
EXPORT_STALE_SECONDS = env.int("EXPORT_STALE_SECONDS", default=300)

# Review workflow tunables.
REVIEW_LEASE_SECONDS = env.int("REVIEW_LEASE_SECONDS", default=600)
# Explanation work not done this long after it was sent is sent again by the sweeper.
REVIEW_EXPLANATION_GRACE_SECONDS = env.int("REVIEW_EXPLANATION_GRACE_SECONDS", default=60)
# The expiry that escalates an item (repeated_abandonment) instead of requeueing it.
REVIEW_MAX_LEASE_EXPIRIES = env.int("REVIEW_MAX_LEASE_EXPIRIES", default=5)
REVIEW_DEFAULT_SLA_SECONDS = env.int("REVIEW_DEFAULT_SLA_SECONDS", default=24 * 3600)
# Webhooks (docs/webhooks.md). Private, loopback and link-local receivers are refused
# unless this is on (a receiver on a private network, tests).
WEBHOOK_ALLOW_PRIVATE_ADDRESSES = env.bool("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", default=False)
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=10.0)
WEBHOOK_MAX_REDIRECTS = env.int("WEBHOOK_MAX_REDIRECTS", default=3)
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=8)
# The wait after the n-th failed attempt: base * 2**(n-1) seconds, at most the cap.
WEBHOOK_BACKOFF_BASE_SECONDS = env.int("WEBHOOK_BACKOFF_BASE_SECONDS", default=10)
WEBHOOK_BACKOFF_MAX_SECONDS = env.int("WEBHOOK_BACKOFF_MAX_SECONDS", default=3600)
# A first attempt not made this long after its message was sent is sent again.
WEBHOOK_SWEEP_GRACE_SECONDS = env.int("WEBHOOK_SWEEP_GRACE_SECONDS", default=60)
# When set, /metrics asks for "Authorization: Bearer <token>".
REVIEW_METRICS_TOKEN = env("REVIEW_METRICS_TOKEN", default="")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("DJANGO_LOG_LEVEL", default="INFO")},
    # In-process tasks (no broker) would log a line per task run: keep it quiet.
    "loggers": {
        "celery.app.trace": {"level": "INFO" if CELERY_BROKER_URL else "WARNING"},
        "kombu.connection": {"level": "INFO" if CELERY_BROKER_URL else "ERROR"},
    },
}
