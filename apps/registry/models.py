"""The model registry: one row per registered model version.

A version is immutable once registered: predictions, routing decisions and labels
refer to it, so changing it in place would rewrite history. A new version is a new row.
"""

from collections.abc import Iterable, Mapping
from typing import Any

from django.db import models


class Task(models.TextChoices):
    BINARY = "binary_classification"
    MULTICLASS = "multiclass_classification"


class ExplainerKind(models.TextChoices):
    LIGHTGBM = "lightgbm"
    XGBOOST = "xgboost"
    LINEAR = "linear"
    SKLEARN = "sklearn"
    PRECOMPUTED = "precomputed"


def feature_is_sensitive(feature: Mapping[str, Any]) -> bool:
    """Whether a feature of a version's schema is sensitive: reviewers never see its
    value, and its attribution is shown only folded with the others'. The registered
    schema always says so (``spec`` stores ``sensitive`` for every feature)."""
    return bool(feature["sensitive"])


def sensitive_feature_names(features: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """The names of the sensitive features of a schema."""
    return frozenset(f["name"] for f in features if feature_is_sensitive(f))


class ModelVersion(models.Model):
    name = models.CharField(max_length=100)
    version = models.CharField(max_length=50)
    task = models.CharField(max_length=32, choices=Task.choices)
    labels = models.JSONField(help_text="Class names in the model's output order.")
    features = models.JSONField(help_text="The feature schema, in the model's input order.")
    explainer = models.JSONField(help_text="Explainer kind and its fields, artifact excluded.")
    routing = models.JSONField(help_text="The routing policy as registered.")
    queue = models.ForeignKey("queues.Queue", on_delete=models.PROTECT, related_name="+")
    artifact_sha256 = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        "auth.User", null=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["name", "version"], name="modelversion_name_version_uniq"
            ),
            models.CheckConstraint(
                condition=models.Q(task__in=Task.values), name="modelversion_task_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.ref

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def public_features(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` (a prediction's features) without this version's sensitive
        features: what reviewers may see, on the API and on the screens alike."""
        sensitive = sensitive_feature_names(self.features)
        return {k: v for k, v in values.items() if k not in sensitive}


class ModelArtifact(models.Model):
    """A model version's file, kept apart so that reading a version never drags its
    (possibly large) bytes along; only the explainer loads it."""

    model_version = models.OneToOneField(
        ModelVersion, primary_key=True, on_delete=models.CASCADE, related_name="artifact"
    )
    data = models.BinaryField()

    def __str__(self) -> str:
        return f"artifact of {self.model_version_id}"


class ReasonCode(models.Model):
    """A reason a reviewer may give for overriding a model's label, per model name
    (shared by its versions); managed by admins in the Django admin."""

    model_name = models.CharField(max_length=100)
    code = models.SlugField(max_length=64)
    description = models.CharField(max_length=200, blank=True)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["model_name", "code"]
        constraints = [
            models.UniqueConstraint(fields=["model_name", "code"], name="reasoncode_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.model_name}: {self.code}"
