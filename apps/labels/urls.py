from django.urls import path

from . import apis

urlpatterns = [
    path("labels/", apis.LabelFeedApi.as_view(), name="labels"),
    path("exports/", apis.ExportListCreateApi.as_view(), name="exports"),
    path("exports/<uuid:export_id>/", apis.ExportDetailApi.as_view(), name="export-detail"),
    path(
        "exports/<uuid:export_id>/download/",
        apis.ExportDownloadApi.as_view(),
        name="export-download",
    ),
]
