"""Local and demo settings: the embedded default works with no environment at all."""

from .base import *  # noqa: F403
from .base import env

SECRET_KEY = env("DJANGO_SECRET_KEY", default="django-insecure-local-development-only")
