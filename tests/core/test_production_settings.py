"""Production settings: hardened, and they refuse to start without a real secret key."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def manage(*args, **env):
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "reviewqueue.settings.production"}
    environment.pop("DJANGO_SECRET_KEY", None)
    environment.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


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
