from django.contrib.auth import views as auth_views
from django.urls import path

from .views import escalations, overview, review

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
    path("queues/", review.queues, name="queues"),
    path("queues/start/", review.start, name="start"),
    path("review/", review.review, name="review"),
    path("review/<int:item_id>/decide/", review.decide, name="decide"),
    path("review/<int:item_id>/escalate/", review.escalate, name="escalate"),
    path("review/<int:item_id>/release/", review.release, name="release"),
    path("review/<int:item_id>/heartbeat/", review.heartbeat, name="heartbeat"),
    path("escalations/", escalations.escalation_list, name="escalations"),
    path("escalations/<int:escalation_id>/", escalations.escalation_detail, name="escalation"),
    path(
        "escalations/<int:escalation_id>/claim/",
        escalations.escalation_claim,
        name="escalation-claim",
    ),
    path(
        "escalations/<int:escalation_id>/resolve/",
        escalations.escalation_resolve,
        name="escalation-resolve",
    ),
    path(
        "escalations/<int:escalation_id>/return/",
        escalations.escalation_return,
        name="escalation-return",
    ),
    path("overview/", overview.overview, name="overview"),
]
