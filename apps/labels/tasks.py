"""Celery adapters for exports: fetch by id, call a service, nothing else."""

from celery import shared_task

from .services import BUILD_TASK, export_build, exports_sweep


@shared_task(
    name=BUILD_TASK,
    ignore_result=True,
    acks_late=True,
    reject_on_worker_lost=True,
)
def build_export(*, job_id: str) -> None:
    """Build one export file; running twice builds it once (see export_build)."""
    export_build(job_id=job_id)


@shared_task(name="labels.sweep_exports", ignore_result=True)
def sweep_exports() -> None:
    """Re-send exports that a lost message or a killed worker left unbuilt."""
    exports_sweep()
