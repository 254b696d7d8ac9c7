"""Predictions as the model server sent them, with the routing decision taken at intake.

Invariants:
- ``(model_version, external_id)`` is unique: a prediction is stored once, and a resend
  with the same ``content_hash`` gets the first answer back.
- A routed prediction has exactly one review item; an unrouted one has none and its
  final decision is the model's.
- ``selection_probability`` is the probability with which the prediction was chosen for
  review (1.0 for low confidence or a risk rule, ``audit_rate`` for an audit sample),
  so a training pipeline can weight audit samples to undo the sampling bias.
"""

from django.conf import settings
from django.db import models


class Prediction(models.Model):
    model_version = models.ForeignKey(
        "registry.ModelVersion", on_delete=models.PROTECT, related_name="predictions"
    )
    external_id = models.CharField(max_length=200)
    content_hash = models.CharField(max_length=64)
    producer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    features = models.JSONField()
    context = models.JSONField(default=dict)
    label = models.CharField(max_length=200)
    probabilities = models.JSONField()
    attributions = models.JSONField(null=True)
    routed = models.BooleanField()
    reasons = models.JSONField(default=list)
    selection_probability = models.FloatField(null=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["model_version", "external_id"], name="prediction_model_external_id_uniq"
            ),
            models.CheckConstraint(
                condition=models.Q(routed=False, selection_probability__isnull=True)
                | models.Q(routed=True, selection_probability__gt=0, selection_probability__lte=1),
                name="prediction_selection_probability_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model_version_id}/{self.external_id}"
