"""Local and demo settings: the embedded default works with no environment at all.

What the demo keeps between runs lives in one git-ignored directory, ``REVIEW_DEMO_DIR``
(``.demo/`` in the checkout, beside the SQLite file): the secret key made on first use,
celery beat's schedule and, with the filesystem broker (``CELERY_BROKER_URL=filesystem://``,
what ``make demo`` uses unless told otherwise), the broker's message folders.
"""

import contextlib
import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from django.core.management.utils import get_random_secret_key

from .base import *  # noqa: F403
from .base import BASE_DIR, CELERY_BROKER_URL, env

DEMO_DIR = Path(env("REVIEW_DEMO_DIR", default=str(BASE_DIR / ".demo")))


def checkout_secret_key(path: Path) -> str:
    """The key stored at ``path``, made (mode 0600) the first time it is asked for.

    Several processes start at once (gunicorn, the worker, beat): the key is written to
    a private temporary file and linked into place, which fails for all but the first,
    so every process reads the same whole key.
    """
    with contextlib.suppress(FileNotFoundError):  # not made yet: make it below
        return path.read_text().strip()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(get_random_secret_key())
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another process was first: its key is the one
        finally:
            draft.unlink()
        return path.read_text().strip()
    except OSError as exc:
        raise ImproperlyConfigured(
            f"Cannot keep the local secret key in {path} ({exc}); set DJANGO_SECRET_KEY."
        ) from exc


# The environment wins; otherwise one random key per checkout, never a public default.
SECRET_KEY = env("DJANGO_SECRET_KEY", default="") or checkout_secret_key(DEMO_DIR / "secret_key")

# celery beat remembers when each entry last ran; not in the working directory.
CELERY_BEAT_SCHEDULE_FILENAME = str(DEMO_DIR / "celerybeat-schedule")

if CELERY_BROKER_URL.startswith("filesystem:"):
    # kombu's filesystem transport: a message is a file in ``messages``, written there by
    # every producer (gunicorn, beat, the worker's retries) and taken by the worker, which
    # moves it away before reading it and deletes it once read (``store_processed``
    # off: nothing piles up). ``control`` holds the exchange tables of broadcasts.
    _broker_dir = DEMO_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "messages"),
        "data_folder_out": str(_broker_dir / "messages"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # How often an idle worker looks for new files.
        "polling_interval": 0.5,
    }
    for _folder in ("messages", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
