"""Production settings: hardened, and they refuse to start without a real secret key."""

import os
import secrets
import socket

import pytest
import requests

from reviewqueue.launcher import gunicorn_start
from tests.helpers import manage_py


def manage(*args, **env):
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "reviewqueue.settings.production"}
    environment.pop("DJANGO_SECRET_KEY", None)
    environment.update(env)
    return manage_py(environment, *args, timeout=120)


def test_check_deploy_is_clean():
    result = manage(
        "check", "--deploy", "--fail-level", "WARNING", DJANGO_SECRET_KEY=secrets.token_urlsafe(60)
    )
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_no_or_weak_secret_key_refuses_to_start():
    for key in (None, "short", "django-insecure-" + "x" * 60):
        result = manage("check", **({"DJANGO_SECRET_KEY": key} if key else {}))
        assert result.returncode != 0
        assert "DJANGO_SECRET_KEY" in result.stderr


def test_debug_cannot_be_switched_on_in_production():
    result = manage(
        "shell",
        "-c",
        "from django.conf import settings; print('DEBUG', settings.DEBUG)",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(60),
        DJANGO_DEBUG="True",
    )
    assert result.returncode == 0, result.stderr
    assert "DEBUG False" in result.stdout


@pytest.fixture
def production_server():
    """gunicorn under the production settings, asked for DEBUG, with a database that
    does not answer: every request that reaches the database fails inside Django."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "reviewqueue.settings.production",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(60),
        "DJANGO_DEBUG": "True",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SECURE_SSL_REDIRECT": "False",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{dead_port}/nothing",
    }
    # Ready once /healthz answers at all: with the database down, it answers 503.
    server = gunicorn_start(environment, ready=lambda status: True, ready_timeout=60)
    try:
        yield server.base_url
    finally:
        server.stop()


DEBUG_MARKERS = ("Traceback", "technical_500", "Django settings", "DJANGO_SECRET_KEY", "URLconf")


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/no/such/page", {}, 404),
        ("/api/v1/no-such-endpoint/", {}, 404),
        ("/api/v1/models/", {"Authorization": "Token abc"}, 500),  # the database is down
        ("/healthz", {}, 503),
        ("/api/v1/models/", {"Host": "attacker.example"}, 400),
    ],
)
def test_debug_pages_never_render(production_server, path, headers, status):
    response = requests.get(production_server + path, headers=headers, timeout=30)
    assert response.status_code == status
    for marker in DEBUG_MARKERS:
        assert marker not in response.text
    assert response.headers["Content-Type"].startswith("application/json")
