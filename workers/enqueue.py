from __future__ import annotations

from celery.canvas import Signature
from sqlalchemy import event
from sqlalchemy.orm import Session


def enqueue_after_commit(session: Session, signature: Signature) -> None:
    """Publish the task only once the rows it reads are committed, so a worker can
    never run it against data that does not exist (yet, or ever, after a rollback)."""

    def publish(_session: Session) -> None:
        signature.apply_async()

    # Request and task sessions are closed after a rollback, so a pending publish
    # never survives into another unit of work.
    event.listen(session, "after_commit", publish, once=True)
