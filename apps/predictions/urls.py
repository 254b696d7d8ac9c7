from django.urls import path

from .apis import PredictionDetailApi, PredictionListCreateApi

urlpatterns = [
    path("predictions/", PredictionListCreateApi.as_view(), name="predictions"),
    path(
        "predictions/<int:prediction_id>/", PredictionDetailApi.as_view(), name="prediction-detail"
    ),
]
