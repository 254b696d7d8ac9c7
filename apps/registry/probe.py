"""Prove an uploaded artifact in a child process, with memory and CPU limits.

The native loaders (LightGBM, XGBoost) trust their input: a truncated or crafted file
can crash them (segfault, abort) or make them allocate without bound. So a new
artifact is first loaded here, in a separate process: whatever the file does, the web
process answers 400 and lives on. The child prints one JSON line: the loaded model's
shape, or the reason it was refused.

Run as ``python -m apps.registry.probe`` with a JSON header line on stdin followed
by the artifact bytes. It needs no Django.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .artifacts import ArtifactError, LoadedModel, load_model

MEMORY_LIMIT_BYTES = 2 * 1024**3
CPU_LIMIT_SECONDS = 30
WALL_LIMIT_SECONDS = 60
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def probe_artifact(
    *, explainer: dict[str, Any], artifact: bytes, n_features: int, labels: Sequence[str]
) -> None:
    """Load the artifact in a limited child process; ArtifactError if it cannot be used."""
    header = json.dumps(
        {"explainer": explainer, "n_features": n_features, "labels": list(labels)}
    ).encode()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "apps.registry.probe"],
            cwd=PROJECT_ROOT,
            input=header + b"\n" + artifact,
            capture_output=True,
            timeout=WALL_LIMIT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ArtifactError("the model file took too long to load") from exc
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if done.returncode == 0 and lines else None
    except ValueError:
        answer = None
    if answer is None:
        raise ArtifactError(
            "the model file is malformed or truncated: loading it failed "
            f"(exit status {done.returncode})"
        )
    if not answer["ok"]:
        raise ArtifactError(answer["reason"])


def _limit_resources() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_LIMIT_SECONDS, CPU_LIMIT_SECONDS))


def main() -> int:
    data = sys.stdin.buffer.read()
    header, _, artifact = data.partition(b"\n")
    spec = json.loads(header)
    _limit_resources()
    try:
        loaded: LoadedModel = load_model(
            explainer=spec["explainer"],
            artifact=artifact,
            n_features=spec["n_features"],
            labels=spec["labels"],
        )
    except ArtifactError as exc:
        print(json.dumps({"ok": False, "reason": str(exc)}))
        return 0
    except MemoryError:
        print(json.dumps({"ok": False, "reason": "loading the model file ran out of memory"}))
        return 0
    print(json.dumps({"ok": True, "n_features": loaded.n_features, "n_classes": loaded.n_classes}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
