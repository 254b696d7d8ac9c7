from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "apps.webhooks"
    label = "webhooks"

    def ready(self):
        # Register the app's Celery tasks in every process (web included): services
        # send them by name (apps.core.enqueue) and never import the tasks module.
        from . import tasks  # noqa: F401
