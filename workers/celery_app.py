"""The Celery application, configured from the same settings as the API.

``celery_app`` is importable without configuration (tasks register on it at import);
every entry point calls :func:`configure` with its loaded settings before use.
"""
from __future__ import annotations

import time

from celery import Celery, signals
from celery.schedules import crontab
from kombu import Queue

from shared.config import Settings
from shared.db import Database
from shared.logging import request_id_var, task_id_var
from shared.metrics import TASK_FAILURES, TASK_SECONDS

celery_app = Celery("wellbeing", include=["workers.tasks.mail", "workers.tasks.employee_import", "workers.tasks.articles", "workers.tasks.digests", "workers.tasks.reports"])
_state: dict[str, object] = {}

# Digest sending and report building run on queues of their own, so each can get its
# own workers (and a burst of one never starves the other); the rest stays on
# ``default``. A worker started without ``-Q`` consumes all three.
QUEUES = ("default", "digests", "reports")
# Each queue bound under its own routing key: a message for one queue never lands in another.
TASK_QUEUES = tuple(Queue(name, routing_key=name) for name in QUEUES)
TASK_ROUTES = {"workers.tasks.digests.*": {"queue": "digests"}, "workers.tasks.reports.*": {"queue": "reports"}}


def queue_settings(broker_url: str) -> dict:
    """Celery's queue and routing settings for a broker. The embedded broker (a SQLite
    file, one worker by design) polls every queue a worker consumes with a write
    transaction, which made digest runs markedly slower; there nothing scales out, so
    everything stays on ``default``."""
    if broker_url.startswith("sqla+"):
        return {"task_queues": TASK_QUEUES[:1], "task_routes": {}}
    return {"task_queues": TASK_QUEUES, "task_routes": TASK_ROUTES}


def configure(settings: Settings) -> Celery:
    _state["settings"] = settings
    _state.pop("db", None)
    celery_app.conf.update(
        broker_url=settings.broker_url,
        # Results are not used for state: the database is the source of truth.
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
        # At-least-once delivery: a task is acknowledged only after it ran, and
        # redelivered if its worker died; tasks are idempotent so a rerun is harmless.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        # Redis redelivers an unacknowledged task after this long: keep it above the
        # longest task so a slow task is not run twice while still running.
        broker_transport_options={"visibility_timeout": 3600} if settings.broker_url.startswith("redis") else {},
        task_default_queue="default",
        **queue_settings(settings.broker_url),
        beat_schedule={
            "publish-due-articles": {"task": "workers.tasks.articles.publish_due_articles", "schedule": 60.0},
            "digest-due-check": {"task": "workers.tasks.digests.due_check_all", "schedule": 300.0},
            "digest-recovery": {"task": "workers.tasks.digests.recover_digest_sends", "schedule": 60.0},
            "reports-build-nightly": {"task": "workers.tasks.reports.build_reports_all", "schedule": crontab(hour=2, minute=15)},
            "activity-retention": {"task": "workers.tasks.reports.purge_activity_all", "schedule": crontab(hour=3, minute=5)},
        },
        worker_hijack_root_logger=False,
    )
    return celery_app


def settings() -> Settings:
    if "settings" not in _state:
        from shared.config import load_settings

        configure(load_settings())
    return _state["settings"]  # type: ignore[return-value]


def database() -> Database:
    """The worker process's database (created lazily, after any fork)."""
    if "db" not in _state:
        _state["db"] = Database(settings().database_url)
    return _state["db"]  # type: ignore[return-value]


@signals.worker_process_init.connect
def _fresh_engine_after_fork(**_kwargs) -> None:
    _state.pop("db", None)


@signals.before_task_publish.connect
def _carry_request_id(headers=None, **_kwargs) -> None:  # noqa: ANN001
    request_id = request_id_var.get()
    if headers is not None and request_id:
        headers["request_id"] = request_id


_task_started: dict[str, float] = {}


@signals.task_prerun.connect
def _bind_task_log_context(task_id=None, task=None, **_kwargs) -> None:  # noqa: ANN001
    task_id_var.set(task_id)
    request_id_var.set(getattr(task.request, "request_id", None) if task else None)
    _task_started[task_id] = time.perf_counter()


@signals.task_postrun.connect
def _clear_task_log_context(task_id=None, task=None, state=None, **_kwargs) -> None:  # noqa: ANN001
    started = _task_started.pop(task_id, None)
    if started is not None and task is not None:
        TASK_SECONDS.labels(task.name, (state or "unknown").lower()).observe(time.perf_counter() - started)
    task_id_var.set(None)
    request_id_var.set(None)


@signals.task_failure.connect
def _count_task_failure(sender=None, **_kwargs) -> None:  # noqa: ANN001
    TASK_FAILURES.labels(getattr(sender, "name", "unknown")).inc()
