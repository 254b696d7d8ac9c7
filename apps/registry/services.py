"""Writes to the model registry."""

import hashlib

from django.db import IntegrityError, transaction

from apps.core.exceptions import Conflict, ValidationFailed
from apps.queues.services import queue_get_or_create

from .artifacts import ArtifactError, load_model
from .models import ModelArtifact, ModelVersion, ReasonCode
from .probe import probe_artifact
from .spec import ModelSpec


def model_version_register(*, spec: ModelSpec, artifact: bytes | None, created_by) -> ModelVersion:
    """Store a validated model version and make sure its review queue exists.

    The artifact is loaded once to prove it (never executing code from it): a model
    that does not load, or whose feature or class count differs from the spec, is a
    400. A ``name:version`` already registered is a 409: versions are immutable.
    """
    try:
        if artifact:  # native loaders: prove it in a child process with limits
            probe_artifact(
                explainer=spec.explainer,
                artifact=artifact,
                n_features=len(spec.features),
                labels=spec.labels,
            )
        else:
            load_model(
                explainer=spec.explainer,
                artifact=None,
                n_features=len(spec.features),
                labels=spec.labels,
            )
    except ArtifactError as exc:
        raise ValidationFailed("The model cannot be used.", details={"artifact": str(exc)}) from exc
    queue = queue_get_or_create(name=spec.policy.queue)
    try:
        with transaction.atomic():
            version = ModelVersion.objects.create(
                name=spec.name,
                version=spec.version,
                task=spec.task,
                labels=spec.labels,
                features=spec.features,
                explainer=spec.explainer,
                routing=spec.routing,
                queue=queue,
                artifact_sha256=hashlib.sha256(artifact).hexdigest() if artifact else "",
                created_by=created_by,
            )
            if artifact:
                ModelArtifact.objects.create(model_version=version, data=artifact)
            return version
    except IntegrityError as exc:
        raise Conflict(
            f"Model {spec.name}:{spec.version} is already registered; register a new version.",
            code="model_version_exists",
        ) from exc


def reason_code_upsert(*, model_name: str, code: str, description: str = "") -> ReasonCode:
    """Make ``code`` an active reason for overriding the label of any version of
    ``model_name``, with ``description``; running it again changes nothing else."""
    reason, _ = ReasonCode.objects.update_or_create(
        model_name=model_name, code=code, defaults={"description": description, "active": True}
    )
    return reason
