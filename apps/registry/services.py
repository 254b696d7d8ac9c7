"""Writes to the model registry."""

import hashlib

from django.db import IntegrityError, transaction

from apps.core.exceptions import Conflict
from apps.reviews.services.queues import queue_get_or_create

from .models import ModelVersion
from .spec import ModelSpec


def model_version_register(*, spec: ModelSpec, artifact: bytes | None, created_by) -> ModelVersion:
    """Store a validated model version and make sure its review queue exists.

    A ``name:version`` already registered is a 409: versions are immutable.
    """
    queue = queue_get_or_create(name=spec.policy.queue)
    try:
        with transaction.atomic():
            return ModelVersion.objects.create(
                name=spec.name,
                version=spec.version,
                task=spec.task,
                labels=spec.labels,
                features=spec.features,
                explainer=spec.explainer,
                routing=spec.routing,
                queue=queue,
                artifact=artifact,
                artifact_sha256=hashlib.sha256(artifact).hexdigest() if artifact else "",
                created_by=created_by,
            )
    except IntegrityError as exc:
        raise Conflict(
            f"Model {spec.name}:{spec.version} is already registered; register a new version.",
            code="model_version_exists",
        ) from exc
