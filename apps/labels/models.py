"""Export jobs: a file of labels built by a worker, downloaded by its owner."""

import uuid

from django.conf import settings
from django.db import models


class ExportStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class ExportJob(models.Model):
    """One export: the owner's labels after ``after`` (with the filters below), up to
    the horizon when the build started; ``next_cursor`` continues the feed after it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    format = models.CharField(max_length=16)
    model_version = models.ForeignKey(
        "registry.ModelVersion", null=True, on_delete=models.PROTECT, related_name="+"
    )
    source = models.CharField(max_length=16, blank=True)
    overridden = models.BooleanField(null=True)
    after = models.CharField(max_length=64, blank=True)
    status = models.CharField(
        max_length=16, choices=ExportStatus.choices, default=ExportStatus.QUEUED
    )
    rows = models.BigIntegerField(default=0)
    total = models.BigIntegerField(null=True, help_text="Rows to write, counted at the start.")
    next_cursor = models.CharField(max_length=64, blank=True)
    file_name = models.CharField(max_length=200, blank=True)
    size_bytes = models.BigIntegerField(null=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True)
    updated_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["updated_at"],
                name="exportjob_unfinished_idx",
                condition=models.Q(status__in=["queued", "running"]),
            )
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=ExportStatus.values), name="exportjob_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"export {self.id} ({self.status})"

    @property
    def progress(self) -> float:
        if self.status == ExportStatus.DONE:
            return 1.0
        if not self.total:
            return 0.0
        return min(1.0, self.rows / self.total)
