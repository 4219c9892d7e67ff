"""Large HRIS CSV imports, run off the web workers."""
from __future__ import annotations

from celery.utils.log import get_task_logger

from shared.domain import import_jobs
from workers.celery_app import celery_app, database

log = get_task_logger(__name__)


@celery_app.task(acks_late=True)
def run_import(org_id: int, job_id: int) -> None:
    """Idempotent: a finished job is skipped; one interrupted by a crash reruns from the
    start (the upsert by external_id makes a rerun harmless; atomic mode is one transaction)."""
    log.info("importing employees: org %s job %s", org_id, job_id)
    import_jobs.run_job(database(), org_id, job_id)
