"""/metrics reports operational state read at scrape time: digest sends by state (from
the database, all organisations) and the tasks waiting in each Celery queue (from the
broker: Redis in the PostgreSQL pass, the in-memory broker on SQLite)."""
from __future__ import annotations

import re

from sqlalchemy import select, update

from shared.domain import digests
from shared.models import DigestSend, SendState
from tests.digest_support import add_article, add_employees
from workers.celery_app import QUEUES, celery_app


def _gauges(client, name: str) -> dict[str, float]:  # noqa: ANN001
    text = client.get("/metrics").get_data(as_text=True)
    return {label: float(value) for label, value in re.findall(rf'^{name}\{{\w+="([^"]+)"\}} (\S+)$', text, re.MULTILINE)}


def test_digest_sends_by_state_across_organisations(client, db, tenant, other_tenant):
    for org, count in ((tenant, 5), (other_tenant, 3)):
        add_employees(db, org.org_id, count, prefix=f"m{org.org_id}-")
        add_article(db, org.org_id, "Walk at lunch")
        with db.session(org.org_id) as session:
            digests.start_run(session, None, "2026-W48")
    with db.session(tenant.org_id) as session:
        failed = list(session.scalars(select(DigestSend.id).order_by(DigestSend.id).limit(2)))
        session.execute(update(DigestSend).where(DigestSend.id.in_(failed)).values(state=SendState.FAILED))
    sends = _gauges(client, "wellbeing_digest_sends")
    assert sends == {"queued": 6, "sending": 0, "sent": 0, "failed": 2, "skipped": 0}


def test_queue_depth_per_queue(client, app):
    from workers.tasks import articles, digests as digest_tasks, reports

    celery_app.control.purge()
    try:
        for _ in range(3):
            digest_tasks.send_digest_batch.delay(424242, [1])
        reports.build_reports.delay(424242)
        articles.publish_due_articles.delay()
        articles.publish_due_articles.delay()
        depth = _gauges(client, "wellbeing_celery_queue_length")
    finally:
        celery_app.control.purge()
    assert depth == {"default": 2, "digests": 3, "reports": 1}
    assert set(depth) == set(QUEUES)
    assert _gauges(client, "wellbeing_celery_queue_length") == {"default": 0, "digests": 0, "reports": 0}
