"""Scheduled publishing of partner articles."""
from __future__ import annotations

from celery.utils.log import get_task_logger

from shared.domain import articles
from workers.celery_app import celery_app, database

log = get_task_logger(__name__)


@celery_app.task(autoretry_for=(OSError,), retry_backoff=True, retry_jitter=True, max_retries=5)
def publish_due_articles() -> int:
    """Publish reviewed articles whose ``publish_at`` has come (beat: every minute).
    Idempotent: an article published once is no longer in review, so reruns and
    overlapping runs publish nothing twice (the version check stops a concurrent one)."""
    db = database()
    with db.session(unscoped=True) as session:
        org_ids = articles.orgs_with_due_articles(session)
    published = 0
    for org_id in org_ids:
        with db.session(org_id) as session:
            ids = articles.publish_due(session)
        published += len(ids)
        if ids:
            log.info("published %d scheduled article(s) of organisation %s", len(ids), org_id)
    return published
