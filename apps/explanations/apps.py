from django.apps import AppConfig


class ExplanationsConfig(AppConfig):
    name = "apps.explanations"
    label = "explanations"
