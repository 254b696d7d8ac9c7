from django.urls import path

from . import apis

urlpatterns = [
    path("queue/claim/", apis.QueueClaimApi.as_view(), name="queue-claim"),
    path("reviews/<int:item_id>/heartbeat/", apis.ReviewHeartbeatApi.as_view()),
    path("reviews/<int:item_id>/release/", apis.ReviewReleaseApi.as_view()),
    path("reviews/<int:item_id>/decide/", apis.ReviewDecideApi.as_view()),
    path("reviews/<int:item_id>/escalate/", apis.ReviewEscalateApi.as_view()),
    path("escalations/", apis.EscalationListApi.as_view(), name="escalations"),
    path("escalations/<int:escalation_id>/claim/", apis.EscalationClaimApi.as_view()),
    path("escalations/<int:escalation_id>/resolve/", apis.EscalationResolveApi.as_view()),
    path("escalations/<int:escalation_id>/return/", apis.EscalationReturnApi.as_view()),
]
