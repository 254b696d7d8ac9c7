"""Reads of the model registry."""

from collections.abc import Iterable

from django.db.models import Q, QuerySet

from apps.core.exceptions import NotFound

from .models import ModelVersion, ReasonCode


def _ref_filter(ref: str) -> Q | None:
    if ref.isdigit():
        return Q(id=int(ref))
    name, sep, version = ref.partition(":")
    if not sep or not name or not version:
        return None
    return Q(name=name, version=version)


def model_version_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.select_related("queue")


def model_version_get(*, ref: str | int) -> ModelVersion:
    """The model version with this id or ``name:version``; NotFound otherwise."""
    condition = _ref_filter(str(ref))
    found = model_version_list().filter(condition).first() if condition else None
    if found is None:
        raise NotFound(f"No model {ref!r}.", code="model_not_found")
    return found


def model_versions_by_ref(*, refs: Iterable[str]) -> dict[str, ModelVersion]:
    """The model versions named by ``refs`` (ids or ``name:version``), in one query."""
    refs = set(refs)
    condition = Q(pk__in=[])
    for ref in refs:
        if (q := _ref_filter(ref)) is not None:
            condition |= q
    found: dict[str, ModelVersion] = {}
    for version in ModelVersion.objects.filter(condition):
        for key in (str(version.id), version.ref):
            if key in refs:
                found[key] = version
    return found


def reason_codes_by_model(*, names: Iterable[str]) -> dict[str, list[str]]:
    """Active override reason codes by model name, in one query."""
    found: dict[str, list[str]] = {}
    rows = ReasonCode.objects.filter(model_name__in=set(names), active=True).order_by("code")
    for name, code in rows.values_list("model_name", "code"):
        found.setdefault(name, []).append(code)
    return found
