"""Review queues and who works on them.

An account with no membership works on every queue; one with memberships works on
exactly those. Registering a model version names its queue, which is created then.
"""

from django.conf import settings
from django.db import models


class Queue(models.Model):
    name = models.CharField(max_length=100, unique=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="QueueMembership", related_name="review_queues"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class QueueMembership(models.Model):
    queue = models.ForeignKey(Queue, on_delete=models.CASCADE)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["queue", "user"], name="queuemembership_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.queue_id}"
