from django.urls import path

from .apis import ModelDetailApi, ModelListCreateApi

urlpatterns = [
    path("models/", ModelListCreateApi.as_view(), name="models"),
    path("models/<str:ref>/", ModelDetailApi.as_view(), name="model-detail"),
]
