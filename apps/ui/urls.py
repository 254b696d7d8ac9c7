from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

app_name = "ui"

urlpatterns = [
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="ui/login.html", redirect_authenticated_user=True
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("queues/", views.queues, name="queues"),
    path("queues/start/", views.start, name="start"),
    path("review/", views.review, name="review"),
    path("review/<int:item_id>/decide/", views.decide, name="decide"),
    path("review/<int:item_id>/escalate/", views.escalate, name="escalate"),
    path("review/<int:item_id>/release/", views.release, name="release"),
    path("review/<int:item_id>/heartbeat/", views.heartbeat, name="heartbeat"),
    path("escalations/", views.escalation_list, name="escalations"),
    path("escalations/<int:escalation_id>/", views.escalation_detail, name="escalation"),
    path(
        "escalations/<int:escalation_id>/claim/",
        views.escalation_claim,
        name="escalation-claim",
    ),
    path(
        "escalations/<int:escalation_id>/resolve/",
        views.escalation_resolve,
        name="escalation-resolve",
    ),
    path(
        "escalations/<int:escalation_id>/return/",
        views.escalation_return,
        name="escalation-return",
    ),
    path("overview/", views.overview, name="overview"),
]
