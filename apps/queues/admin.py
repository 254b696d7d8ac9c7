from django.contrib import admin

from .models import Queue, QueueMembership


class MembershipInline(admin.TabularInline):
    model = QueueMembership
    extra = 1
    autocomplete_fields = ("user",)


@admin.register(Queue)
class QueueAdmin(admin.ModelAdmin):
    list_display = ("name", "created_at")
    search_fields = ("name",)
    inlines = [MembershipInline]


@admin.register(QueueMembership)
class QueueMembershipAdmin(admin.ModelAdmin):
    """Who works on which queue. An account with no membership works on every queue."""

    list_display = ("queue", "user")
    list_filter = ("queue",)
    list_select_related = ("queue", "user")
    search_fields = ("queue__name", "user__username")
    autocomplete_fields = ("queue", "user")
