"""Real ``wellbeing worker`` processes for the shutdown and scale-out tests: each in a
session (process group) of its own, on a broker that worker subprocesses can share, fed
by a publisher that routes tasks exactly as the product does (digests and reports
queues)."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from sqlalchemy import func, select

from shared.config import Settings
from shared.models import DigestSend, SendState
from workers.celery_app import queue_settings

ROOT = Path(__file__).resolve().parent.parent
# The Redis database these tests own on the shared test server (the product's tests use
# WELLBEING_TEST_REDIS_URL's; a worker subprocess must not steal their tasks, nor they ours).
PRIVATE_REDIS_DB = 8


def shared_broker(settings: Settings, tmp_path: Path) -> str:
    """A broker several processes can share: a Redis database of our own in the
    PostgreSQL pass, else a SQLite file (the memory broker lives inside one process)."""
    if settings.broker_url.startswith("redis"):
        import redis

        url = settings.broker_url.rsplit("/", 1)[0] + f"/{PRIVATE_REDIS_DB}"
        redis.Redis.from_url(url).flushdb()
        return url
    return f"sqla+sqlite:///{tmp_path / 'broker.db'}"


class Publisher:
    """Publishes by task name through a Celery app of its own, with the product's routes,
    so the process-wide app (and its connection pools) is never re-pointed."""

    def __init__(self, broker_url: str):
        from celery import Celery

        self.app = Celery("wellbeing-test-publisher", broker=broker_url)
        self.app.conf.update(task_serializer="json", accept_content=["json"], task_default_queue="default",
                             broker_connection_retry_on_startup=True, **queue_settings(broker_url))

    def send(self, task: str, *args) -> None:  # noqa: ANN002
        self.app.send_task(task, args=args)

    def close(self) -> None:
        self.app.close()


def worker_env(settings: Settings, **overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": settings.database_url, "BROKER_URL": settings.broker_url, "SMTP_URL": settings.smtp_url,
        "MAIL_FROM": settings.mail_from, "PUBLIC_URL": settings.public_url, "SECRET_KEY": settings.secret_key,
        "WELLBEING_ENV": "testing", "LOG_LEVEL": "WARNING", "RATELIMIT_STORAGE_URL": "memory://",
    })
    env.update(overrides)
    return env


def start_worker(env: dict[str, str], log_path: Path, *celery_args: str, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    """``wellbeing worker CELERY_ARGS`` in a session of its own (``prefix`` runs it through
    another command, e.g. ``ip netns exec NAME``)."""
    command = [*prefix, str(ROOT / ".venv" / "bin" / "wellbeing"), "worker", "--without-gossip", "--without-mingle",
               "--loglevel=WARNING", *celery_args]
    log = open(log_path, "ab")  # noqa: SIM115 - the child keeps it
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_group(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM the worker's process group (warm shutdown), then SIGKILL it if it hangs."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def send_counts(db, org_ids: list[int]) -> dict[str, int]:  # noqa: ANN001
    counts = {s.value: 0 for s in SendState}
    for org_id in org_ids:
        with db.session(org_id) as session:
            for state, n in session.execute(select(DigestSend.state, func.count()).group_by(DigestSend.state)):
                counts[SendState(state).value] += n
    return counts


def wait_for(condition, timeout: float, interval: float = 0.25, what: str = "condition") -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
