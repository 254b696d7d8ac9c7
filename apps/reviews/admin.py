from django.contrib import admin

from .models import ReviewItem


@admin.register(ReviewItem)
class ReviewItemAdmin(admin.ModelAdmin):
    """Read-only: review items change state only through the review workflow."""

    list_display = ("id", "queue", "status", "due_at", "priority", "explanation_status")
    list_filter = ("status", "queue", "explanation_status")
    list_select_related = ("queue",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
