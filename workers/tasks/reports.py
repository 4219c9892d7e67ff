"""Report aggregation and activity retention (beat: nightly per organisation)."""
from __future__ import annotations

from celery.utils.log import get_task_logger
from sqlalchemy import select

from shared.domain import activity, reports
from shared.models import Organisation
from workers.celery_app import celery_app, database

log = get_task_logger(__name__)


def _org_ids() -> list[int]:
    with database().session(unscoped=True) as session:
        return list(session.scalars(select(Organisation.id)))


@celery_app.task(bind=True, autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def build_reports(self, org_id: int, weeks: list[str] | None = None) -> dict:
    """Rebuild the report cells of the weeks with new events (or of ``weeks``). Idempotent:
    a period is deleted and rebuilt in one transaction."""
    with database().session(org_id) as session:
        activity.sync_product_events(session)
    with database().session(org_id) as session:
        result = reports.build(session, weeks)
    log.info("reports for org %s: %d weeks, %d periods, %d cells", org_id, len(result.weeks), result.periods, result.cells)
    return {"weeks": result.weeks, "periods": result.periods, "cells": result.cells}


@celery_app.task
def build_reports_all() -> None:
    for org_id in _org_ids():
        build_reports.delay(org_id)


@celery_app.task
def purge_activity(org_id: int) -> int:
    with database().session(org_id) as session:
        return activity.purge_expired(session)


@celery_app.task
def purge_activity_all() -> None:
    for org_id in _org_ids():
        purge_activity.delay(org_id)
