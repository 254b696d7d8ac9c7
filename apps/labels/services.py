"""Export jobs: created by a pipeline, built by a worker, downloaded through a signed,
expiring link by the account that asked for them."""

import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from apps.core.enqueue import enqueue, enqueue_on_commit
from apps.core.exceptions import NotFound
from apps.queues.scope import queue_scope
from apps.registry.models import ModelVersion

from .cursor import START, Cursor, cursor_parse
from .formats import ENCODERS, EXTENSIONS, LabelValues
from .models import ExportJob, ExportStatus
from .selectors import LabelFilter, label_count, label_horizon, label_models, label_page, label_rows

logger = logging.getLogger(__name__)

EXPORT_PAGE_ROWS = 20_000
BUILD_TASK = "labels.build_export"
_LINK_SALT = "reviewqueue.labels.export-download"


@dataclass(frozen=True)
class ExportRequest:
    format: str
    model_version: ModelVersion | None = None
    after: Cursor = START
    source: str | None = None
    overridden: bool | None = None


def export_create(*, user, request: ExportRequest) -> ExportJob:
    """Record an export job and hand it to a worker once the row is committed."""
    now = timezone.now()
    with transaction.atomic():
        job = ExportJob.objects.create(
            owner=user,
            format=request.format,
            model_version=request.model_version,
            source=request.source or "",
            overridden=request.overridden,
            after="" if request.after == START else str(request.after),
            created_at=now,
            updated_at=now,
        )
        enqueue_on_commit(BUILD_TASK, _messages([job.id]), what="export jobs")
    return job


def _messages(job_ids: list[uuid.UUID]) -> list[dict[str, str]]:
    return [{"job_id": str(job_id)} for job_id in job_ids]


def export_get(*, user, job_id: uuid.UUID) -> ExportJob:
    """The caller's own export; another account's is 404, never its contents."""
    job = ExportJob.objects.filter(id=job_id, owner=user).first()
    if job is None:
        raise NotFound("No such export.", code="export_not_found")
    return job


def export_build(*, job_id: uuid.UUID | str, stale_after: timedelta | None = None) -> None:
    """Build the export file. Idempotent: a job already done, or being built by a live
    worker, is left alone; a job whose builder went silent (a killed worker) is taken
    over and built again from the start."""
    stale_after = stale_after or timedelta(seconds=settings.EXPORT_STALE_SECONDS)
    now = timezone.now()
    taken = ExportJob.objects.filter(_takeable(now - stale_after), id=job_id)
    if not taken.update(
        status=ExportStatus.RUNNING,
        started_at=now,
        updated_at=now,
        attempts=F("attempts") + 1,
        rows=0,
        error="",
    ):
        return
    job = ExportJob.objects.get(id=job_id)
    try:
        _write(job)
    except Exception as exc:
        logger.exception("export %s failed", job.id)
        ExportJob.objects.filter(id=job.id, attempts=job.attempts).update(
            status=ExportStatus.FAILED,
            error=f"{type(exc).__name__}: {exc}"[:2000],
            updated_at=timezone.now(),
            finished_at=timezone.now(),
        )


def _takeable(stale_before: datetime) -> Q:
    """Jobs a worker may take: queued, or running with no progress since
    ``stale_before`` (their builder died)."""
    return Q(status=ExportStatus.QUEUED) | Q(
        status=ExportStatus.RUNNING, updated_at__lt=stale_before
    )


def _filters(job: ExportJob) -> LabelFilter:
    return LabelFilter(
        model_version_id=job.model_version_id,
        source=job.source or None,
        overridden=job.overridden,
        queue_ids=queue_scope(job.owner),
    )


def _write(job: ExportJob) -> None:
    filters = _filters(job)
    after = cursor_parse(job.after)
    horizon = label_horizon()
    total = label_count(after=after, filters=filters, horizon=horizon)
    ExportJob.objects.filter(id=job.id).update(total=total, updated_at=timezone.now())
    root = Path(settings.EXPORT_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{job.id}.{EXTENSIONS[job.format]}"
    partial = root / f".{job.id}.{job.attempts}.partial"
    progress = _Progress(job=job, cursor=after)
    values = LabelValues(label_models())
    rows = (values(row) for row in _rows(progress, filters=filters, horizon=horizon))
    with partial.open("wb") as out:
        for chunk in ENCODERS[job.format](rows):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, final)
    finished = timezone.now()
    ExportJob.objects.filter(id=job.id, attempts=job.attempts).update(
        status=ExportStatus.DONE,
        rows=progress.rows,
        next_cursor=str(progress.cursor),
        file_name=final.name,
        size_bytes=final.stat().st_size,
        updated_at=finished,
        finished_at=finished,
    )


@dataclass
class _Progress:
    job: ExportJob
    cursor: Cursor  # the last label written
    rows: int = 0


def _rows(progress: _Progress, *, filters: LabelFilter, horizon: int) -> Iterator[tuple]:
    """The export's rows page by page, recording progress between pages (the streaming
    connection is free then); the horizon is fixed, so the set cannot grow under it."""
    while True:
        page = label_page(
            after=progress.cursor, limit=EXPORT_PAGE_ROWS, filters=filters, horizon=horizon
        )
        if page.last is None:
            return
        for row in label_rows(page=page):
            progress.rows += 1
            yield row
        progress.cursor = page.last
        ExportJob.objects.filter(id=progress.job.id, attempts=progress.job.attempts).update(
            rows=progress.rows, updated_at=timezone.now()
        )


def exports_sweep(*, now: datetime | None = None) -> list[uuid.UUID]:
    """Send again the jobs a lost message or a killed worker left unbuilt; a broker
    outage is logged once and the next sweep tries again."""
    now = now or timezone.now()
    stale_before = now - timedelta(seconds=settings.EXPORT_STALE_SECONDS)
    ids = list(
        ExportJob.objects.filter(_takeable(stale_before), updated_at__lt=stale_before).values_list(
            "id", flat=True
        )[:100]
    )
    enqueue(BUILD_TASK, _messages(ids), what="export jobs")
    return ids


def export_download_url(*, job: ExportJob, request) -> str | None:
    """A link to the file that expires after EXPORT_LINK_SECONDS; None until done."""
    if job.status != ExportStatus.DONE:
        return None
    token = signing.TimestampSigner(salt=_LINK_SALT).sign(str(job.id))
    path = f"/api/v1/exports/{job.id}/download/?token={token}"
    return request.build_absolute_uri(path) if request is not None else path


def export_file(*, user, job_id: uuid.UUID, token: str) -> tuple[ExportJob, Path]:
    """The caller's finished export file, if the link is genuine and unexpired."""
    try:
        signed_id = signing.TimestampSigner(salt=_LINK_SALT).unsign(
            token, max_age=settings.EXPORT_LINK_SECONDS
        )
    except signing.SignatureExpired as exc:
        raise NotFound("This download link has expired.", code="link_expired") from exc
    except signing.BadSignature as exc:
        raise NotFound("No such export.", code="export_not_found") from exc
    job = export_get(user=user, job_id=job_id)
    if signed_id != str(job.id) or job.status != ExportStatus.DONE:
        raise NotFound("No such export.", code="export_not_found")
    return job, Path(settings.EXPORT_ROOT) / job.file_name
