"""Fixtures of the label feed tests: a pipeline client, a reviewer, and the model
version with the reason code ``policy``."""

import pytest

from apps.registry.models import ModelVersion, ReasonCode
from tests.factories import make_client, make_user


@pytest.fixture
def pipeline_client(db):
    return make_client("pipeline", "pipeline")


@pytest.fixture
def reviewer(db):
    return make_user("rev-1", "reviewer")


@pytest.fixture
def model_version(registered_model) -> ModelVersion:
    version = ModelVersion.objects.get(id=registered_model["id"])
    ReasonCode.objects.get_or_create(model_name=version.name, code="policy")
    return version
