"""Stored explanations: one per prediction (a unique one-to-one), written once.

Contributions are stored for every feature, sensitive ones included, in the model's
feature order; what a reviewer sees is derived from them (sensitive features folded
into one row, sorted by size) when the item is shown.
"""

from django.db import models


class Explanation(models.Model):
    prediction = models.OneToOneField(
        "predictions.Prediction", on_delete=models.PROTECT, related_name="explanation"
    )
    method = models.CharField(max_length=32)
    output = models.CharField(max_length=16)
    base_value = models.FloatField()
    model_output = models.FloatField()
    contributions = models.JSONField(help_text="One number per feature, in feature order.")
    additivity_error = models.FloatField()
    seconds = models.FloatField(help_text="Time spent per row in the explainer.")
    document = models.TextField(
        blank=True,
        default="",
        db_default="",
        help_text="The explanation as the label feed serves it (explanation_document); "
        "empty for rows stored before it existed: the feed then builds it.",
    )
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"explanation of prediction {self.prediction_id}"
