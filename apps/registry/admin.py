from django.contrib import admin

from .models import ModelVersion, ReasonCode


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    """Read-only: versions are registered through the API, which validates them, and
    never change afterwards."""

    list_display = ("id", "name", "version", "task", "queue", "created_at")
    list_filter = ("task", "name")
    search_fields = ("name", "version")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ReasonCode)
class ReasonCodeAdmin(admin.ModelAdmin):
    """The override reasons reviewers choose from, per model name."""

    list_display = ("model_name", "code", "description", "active")
    list_filter = ("active", "model_name")
    search_fields = ("model_name", "code")
