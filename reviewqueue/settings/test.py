"""Test settings: the real PostgreSQL and Redis of the machine unless told otherwise."""

from .base import *  # noqa: F403
from .base import env

SECRET_KEY = "test-secret-key-not-for-production"  # noqa: S105
DEBUG = False
ALLOWED_HOSTS = ["*"]
DATABASES = {
    "default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/reviewqueue"),
}
DATABASES["default"]["CONN_MAX_AGE"] = 0
# Tests that need a broker and a worker start them themselves; everything else runs
# tasks in-process so that a test sees their effect at once.
CELERY_BROKER_URL = ""
CELERY_TASK_ALWAYS_EAGER = True
TEST_REDIS_URL = env("TEST_REDIS_URL", default="redis://127.0.0.1:6379/15")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Static files come from the finders, per request; no collectstatic before tests.
WHITENOISE_AUTOREFRESH = True
WHITENOISE_USE_FINDERS = True
