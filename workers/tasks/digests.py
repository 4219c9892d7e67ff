"""Weekly digest tasks. Every task carries ids only, is idempotent and safe to run twice:
the database (one DigestSend per employee and week, claimed atomically) makes the
effect exactly once; the broker only carries hints, and lost hints are recovered from
the database by ``recover_digest_sends``."""
from __future__ import annotations

import os
import socket

from celery import signals
from celery.utils.log import get_task_logger

from shared.domain import digest_render, digests
from workers.celery_app import celery_app, database, settings

log = get_task_logger(__name__)
_limiter: dict[str, digests.RateLimiter] = {}


def _rate_limiter() -> digests.RateLimiter:
    url = settings().broker_url
    if url not in _limiter:
        _limiter.clear()
        _limiter[url] = digests.RateLimiter(url)
    return _limiter[url]


@signals.worker_init.connect
def _load_before_first_batch(**_kwargs) -> None:
    """Import the database driver, load the digest templates and make the rate limiter's
    client when the worker starts (before a prefork pool forks), not in its first batch:
    about 0.25 s that batch would otherwise spend before its first message."""
    database()
    digest_render.load_templates()
    _rate_limiter()


def enqueue_batches(org_id: int, batches: list[list[int]]) -> None:
    for batch in batches:
        send_digest_batch.delay(org_id, batch)


@celery_app.task(acks_late=True)
def due_check_all() -> int:
    """Beat, every few minutes: one small due-check task per organisation."""
    orgs = digests.orgs_for_due_check(database())
    for org_id in orgs:
        due_check_org.delay(org_id)
    return len(orgs)


@celery_app.task(acks_late=True, autoretry_for=(OSError,), retry_backoff=True, retry_jitter=True, max_retries=5)
def due_check_org(org_id: int) -> int:
    with database().session(org_id) as session:
        result = digests.due_check(session)
    # Published after the commit; if this process dies first, recovery enqueues them.
    enqueue_batches(org_id, result.batches)
    if result.created:
        log.info("digest due-check org %s: %s sends created", org_id, result.created)
    return result.created


@celery_app.task(acks_late=True)
def recover_digest_sends() -> int:
    """Beat, every minute: sends a dead worker held, and queued sends whose task was lost."""
    found = digests.recover(database())
    for org_id, batches in found.items():
        enqueue_batches(org_id, batches)
    return sum(len(b) for batches in found.values() for b in batches)


@celery_app.task(bind=True, acks_late=True, max_retries=None)
def send_digest_batch(self, org_id: int, send_ids: list[int]) -> dict:
    worker = f"{socket.gethostname()}:{os.getpid()}:{self.request.id}"[:120]
    outcome = digests.process_batch(database(), settings(), org_id, send_ids, worker, limiter=_rate_limiter())
    if outcome.retry_ids:
        # Temporary SMTP errors: the rows are back in the queue with their attempt
        # counted; this task comes back for them after the backoff.
        raise self.retry(args=(org_id, outcome.retry_ids), countdown=outcome.retry_delay)
    return {"sent": outcome.sent, "failed": outcome.failed, "skipped": outcome.skipped}


@celery_app.task(acks_late=True, autoretry_for=(OSError,), retry_backoff=True, retry_jitter=True, max_retries=5)
def send_test_digest(org_id: int, user_id: int, employee_id: int | None, iso_week: str | None) -> None:
    from shared import mail
    from shared.models import User

    from shared.domain import digest_render

    config = settings()
    with database().session(org_id) as session:
        user = session.get(User, user_id)
        if user is None or not user.is_active:
            return
        raw = digests.sample_message(session, config, user, employee_id, iso_week)
        to = user.email
    with mail.smtp_connection(config.smtp) as client:
        client.sendmail(digest_render.envelope_sender(config), [to], raw)
