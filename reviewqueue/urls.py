from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from apps.operations.pages import index
from apps.operations.views import healthz, metrics

api_v1 = [
    path("", include("apps.registry.urls")),
    path("", include("apps.predictions.urls")),
    path("", include("apps.reviews.urls")),
    path("", include("apps.labels.urls")),
]

urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("", include("apps.ui.urls")),
    path("", index, name="index"),
]

handler400 = "apps.core.views.bad_request"
handler404 = "apps.core.views.not_found"
handler500 = "apps.core.views.server_error"
