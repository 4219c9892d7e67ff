"""Fault tests for weekly digests (slow): a 2,000-employee run survives SIGKILLed
workers, a Redis restart and a misbehaving SMTP server, and ends with exactly one
message per due employee in the sink (counted by recipient and Message-ID) and no send
stuck. The test process plays beat: it runs the recovery sweep every second."""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess

import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from shared.domain import digests
from shared.models import DigestSend, SendState
from tests.conftest import TEST_DB, free_port, make_settings
from tests.digest_support import FlakySink, add_article, add_employees, per_recipient, start_sink

pytestmark = pytest.mark.slow

EMPLOYEES = 2000
CLAIM_TIMEOUT = timedelta(seconds=10)  # above the 5 s heartbeat plus one message
REQUEUE_AFTER = timedelta(seconds=15)
ROOT = Path(__file__).resolve().parent.parent


def _counts(db, org_id: int) -> dict[str, int]:  # noqa: ANN001
    with db.session(org_id) as session:
        rows = session.execute(select(DigestSend.state, func.count()).group_by(DigestSend.state)).all()
    counts = {s.value: 0 for s in SendState}
    counts.update({SendState(state).value: n for state, n in rows})
    return counts


class Publisher:
    """Publishes digest tasks to the broker of the worker subprocesses through a Celery
    app of its own, so the process-wide app (and its pools) is never re-pointed."""

    def __init__(self, broker_url: str):
        from celery import Celery

        self.app = Celery("wellbeing-fault-publisher", broker=broker_url)
        self.app.conf.update(task_serializer="json", accept_content=["json"], task_default_queue="default",
                             broker_connection_retry_on_startup=True)

    def enqueue(self, org_id: int, batches: list[list[int]]) -> None:
        for batch in batches:
            self.app.send_task("workers.tasks.digests.send_digest_batch", args=(org_id, batch))

    def close(self) -> None:
        self.app.close()


class Beat:
    """The recovery sweep, as beat would run it, with test-sized timeouts."""

    def __init__(self, db, org_id: int, publisher: Publisher):  # noqa: ANN001
        self.db, self.org_id, self.last, self.publisher = db, org_id, 0.0, publisher
        self.requeued = 0

    def tick(self) -> None:
        if time.monotonic() - self.last < 1:
            return
        self.last = time.monotonic()
        found = digests.recover(self.db, claim_timeout=CLAIM_TIMEOUT, requeue_after=REQUEUE_AFTER)
        for org_id, batches in found.items():
            self.requeued += sum(map(len, batches))
            try:
                self.publisher.enqueue(org_id, batches)
            except Exception:  # noqa: BLE001 - broker down: these rows are found again next tick
                with self.db.session(org_id) as session:
                    session.execute(update(DigestSend).where(DigestSend.id.in_([i for b in batches for i in b]))
                                    .values(enqueued_at=None).execution_options(synchronize_session=False))


def _worker_env(settings) -> dict[str, str]:  # noqa: ANN001
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": settings.database_url, "BROKER_URL": settings.broker_url, "SMTP_URL": settings.smtp_url,
        "MAIL_FROM": settings.mail_from, "PUBLIC_URL": settings.public_url, "SECRET_KEY": settings.secret_key,
        "WELLBEING_ENV": "testing", "LOG_LEVEL": "WARNING", "RATELIMIT_STORAGE_URL": "memory://",
    })
    return env


def _start_worker(settings, log_path: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:  # noqa: ANN001
    # The solo pool runs tasks in the worker process itself: SIGKILL takes the task with it.
    command = [str(ROOT / ".venv" / "bin" / "wellbeing"), "worker", "--pool=solo", "--without-gossip", "--without-mingle",
               "--without-heartbeat", "--loglevel=WARNING"]
    log = open(log_path, "ab")  # noqa: SIM115
    return subprocess.Popen(command, env={**_worker_env(settings), **(extra_env or {})}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _prepare(db, settings, org_id: int) -> list[list[int]]:  # noqa: ANN001
    add_employees(db, org_id, EMPLOYEES, prefix="f")
    add_article(db, org_id, "Move more, sit less")
    with db.session(org_id) as session:
        _, batches = digests.start_run(session, None, "2026-W48")
    return batches


def _wait_until_settled(db, org_id: int, beat: Beat, timeout: float, on_tick=None) -> dict[str, int]:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    counts = _counts(db, org_id)
    while time.monotonic() < deadline:
        beat.tick()
        if on_tick is not None:
            on_tick(counts)
        counts = _counts(db, org_id)
        if counts["queued"] == 0 and counts["sending"] == 0:
            return counts
        time.sleep(0.25)
    return counts


def _assert_exactly_once(label: str, messages: list, counts: dict[str, int], beat: Beat, extra: str = "",
                         crashes: int = 0) -> None:
    raw, distinct = per_recipient(messages)
    pairs = {(m["To"], m["Message-ID"]) for m in messages}
    duplicates = len(messages) - len(pairs)
    print(f"\n[{label}] employees={EMPLOYEES} sends={counts} messages_in_sink={len(messages)} recipients={len(raw)} "
          f"distinct(recipient, Message-ID)={len(pairs)} redelivered_same_id={duplicates} requeued_by_recovery={beat.requeued} {extra}")
    assert counts == {"queued": 0, "sending": 0, "sent": EMPLOYEES, "failed": 0, "skipped": 0}
    assert len(raw) == EMPLOYEES
    # Every due employee has exactly one message (one Message-ID)...
    assert set(distinct.values()) == {1}
    assert len(pairs) == EMPLOYEES
    # A worker killed after the SMTP server accepted messages but before their chunk's
    # "sent" commit leaves those sends ambiguous; recovery hands them over again with the
    # same Message-ID (receivers de-duplicate on it). At most two chunks per crash, never
    # otherwise.
    assert duplicates <= crashes * digests.MAX_REDELIVERED_PER_CRASH


def _private_broker(settings, tmp_path: Path) -> str:  # noqa: ANN001
    """A broker worker subprocesses can share: a Redis database of our own on the test
    server (PostgreSQL pass), else a SQLite file (the memory broker is per process)."""
    if settings.broker_url.startswith("redis"):
        import redis

        broker = settings.broker_url.rsplit("/", 1)[0] + "/9"
        redis.Redis.from_url(broker).flushdb()
        return broker
    return f"sqla+sqlite:///{tmp_path / 'broker.db'}"


@pytest.mark.prints_counts
def test_sigkilled_workers_are_recovered(db, settings, tenant, smtp_sink, tmp_path):
    run_settings = make_settings(settings.database_url, _private_broker(settings, tmp_path), smtp_sink.port)
    publisher = Publisher(run_settings.broker_url)
    try:
        batches = _prepare(db, settings, tenant.org_id)
        publisher.enqueue(tenant.org_id, batches)
        beat = Beat(db, tenant.org_id, publisher)
        log_path = tmp_path / "worker.log"
        worker = _start_worker(run_settings, log_path)
        kills = 0
        try:
            # SIGKILL the worker whenever it has made progress, several times, restarting it each time.
            last_sent = 0
            deadline = time.monotonic() + 60
            while kills < 4 and time.monotonic() < deadline:
                beat.tick()
                sent = len(smtp_sink.messages)
                if sent >= last_sent + 150:
                    time.sleep(random.uniform(0, 0.3))
                    worker.send_signal(signal.SIGKILL)
                    worker.wait(10)
                    kills += 1
                    last_sent = len(smtp_sink.messages)
                    worker = _start_worker(run_settings, log_path)
                time.sleep(0.05)
            counts = _wait_until_settled(db, tenant.org_id, beat, timeout=90)
        finally:
            _stop(worker)
        assert kills == 4, f"worker made too little progress to be killed 4 times: {log_path.read_text()[-3000:]}"
        _assert_exactly_once("sigkill", smtp_sink.wait_for(EMPLOYEES, timeout=5), counts, beat, f"kills={kills}", crashes=kills)
    finally:
        publisher.close()


@pytest.mark.prints_counts
@pytest.mark.skipif(TEST_DB != "postgresql", reason="Redis restart: PostgreSQL + Redis pass only")
def test_redis_restart_mid_run(db, settings, tenant, smtp_sink, tmp_path):

    if shutil.which("redis-server") is None:
        pytest.fail("redis-server not installed (ops/test installs it)")
    # A Redis of our own (no persistence), so restarting it disturbs nobody else.
    port = free_port()

    def start_redis() -> subprocess.Popen:
        process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                    "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                return process
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    redis_process = start_redis()
    run_settings = make_settings(settings.database_url, f"redis://127.0.0.1:{port}/0", smtp_sink.port)
    publisher = Publisher(run_settings.broker_url)
    worker = None
    try:
        batches = _prepare(db, settings, tenant.org_id)
        publisher.enqueue(tenant.org_id, batches)
        beat = Beat(db, tenant.org_id, publisher)
        log_path = tmp_path / "worker.log"
        worker = _start_worker(run_settings, log_path)
        deadline = time.monotonic() + 60
        while len(smtp_sink.messages) < EMPLOYEES // 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        # Restart Redis: every task still in it is lost (no persistence); the database knows better.
        redis_process.kill()
        redis_process.wait(10)
        time.sleep(1)
        redis_process = start_redis()
        restarted_at = len(smtp_sink.messages)

        def keep_beat(_counts):  # noqa: ANN001
            try:
                beat.tick()
            except Exception:  # noqa: BLE001 - publishing can fail while the broker reconnects
                pass

        counts = _wait_until_settled(db, tenant.org_id, beat, timeout=120, on_tick=keep_beat)
        _assert_exactly_once("redis-restart", smtp_sink.wait_for(EMPLOYEES, timeout=5), counts, beat,
                             f"restarted_after={restarted_at}", crashes=1)
    finally:
        if worker is not None:
            _stop(worker)
        redis_process.kill()
        redis_process.wait(10)
        publisher.close()


@pytest.mark.prints_counts
def test_smtp_temporary_errors_and_dropped_connections(db, settings, tenant, tmp_path):

    rng = random.Random(6)
    answers: dict[tuple[str, int], str | None] = {}

    def decide(recipient: str, attempt: int):  # noqa: ANN202
        key = (recipient, attempt)
        if key not in answers:
            roll = rng.random()
            answers[key] = "451 4.7.1 greylisted, try again" if roll < 0.20 else "drop" if roll < 0.25 else None
        return answers[key]

    sink = FlakySink(port=free_port(), decide=decide)
    controller = start_sink(sink)
    run_settings = make_settings(settings.database_url, _private_broker(settings, tmp_path), sink.port)
    publisher = Publisher(run_settings.broker_url)
    extra_env = {"WELLBEING_DIGEST_RETRY_BASE_SECONDS": "0.2", "WELLBEING_DIGEST_RETRY_MAX_SECONDS": "2"}
    workers = []
    try:
        batches = _prepare(db, settings, tenant.org_id)
        publisher.enqueue(tenant.org_id, batches)
        beat = Beat(db, tenant.org_id, publisher)
        workers = [_start_worker(run_settings, tmp_path / f"worker{i}.log", extra_env) for i in range(2)]
        counts = _wait_until_settled(db, tenant.org_id, beat, timeout=120)
        temporary = sum(1 for a in answers.values() if a and a.startswith("451"))
        drops = sum(1 for a in answers.values() if a == "drop")
        _assert_exactly_once("smtp-4xx-and-drops", sink.wait_for(EMPLOYEES, timeout=5), counts, beat,
                             f"answered_4xx={temporary} dropped_connections={drops} workers=2")
        assert temporary > EMPLOYEES * 0.15 and drops > 0
        with db.session(tenant.org_id) as session:
            retried = session.scalar(select(func.count()).select_from(DigestSend).where(DigestSend.attempts > 1))
        assert retried >= temporary * 0.5
    finally:
        for worker in workers:
            _stop(worker)
        controller.stop()
        publisher.close()
