"""Fixtures of the review queue tests: the registered model's version and ready items
made straight in the database (tests/factories.py)."""

from collections.abc import Callable
from typing import Any

import pytest

from apps.registry.models import ModelVersion
from tests.factories import make_items


@pytest.fixture
def model_version(registered_model) -> ModelVersion:
    """credit-default:3, registered through the API, routing to queue ``default``."""
    return ModelVersion.objects.get(id=registered_model["id"])


@pytest.fixture
def ready_items(model_version) -> Callable[..., list[int]]:
    def make(n: int, **kwargs: Any) -> list[int]:
        return make_items(model_version=model_version, n=n, **kwargs)

    return make
