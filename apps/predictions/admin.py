from django.contrib import admin

from .models import Prediction


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    """Read-only: predictions are what the model server sent."""

    list_display = ("id", "external_id", "model_version", "label", "routed", "created_at")
    list_filter = ("routed", "model_version")
    list_select_related = ("model_version",)
    search_fields = ("external_id",)
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
