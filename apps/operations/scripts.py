"""Modules of ``scripts/`` for the demo commands: ``scripts`` is no package (its files
run on their own, as clients of the server), so they are loaded from their files.

A module is loaded once per process under its file's name, the name the scripts use
for each other too, so a command and a script share one copy.
"""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from django.conf import settings


def script_module(name: str) -> ModuleType:
    """``scripts/<name>.py``, loaded from its file the first time it is asked for."""
    if name in sys.modules:
        return sys.modules[name]
    path = Path(settings.BASE_DIR) / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    # Registered first: dataclasses look their module up while the class is made.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
