"""Digest throughput: the full pipeline (due-check, claim, re-check, personalise, render,
SMTP, record) against a raw smtplib loop sending one pre-rendered message per recipient
over one connection (a digest rendered by the product once, so both send messages of the
same size), to the same SMTP sink (a separate process), in the same run (the raw loop
right before each pipeline measurement). Prints messages/s of both and the ratio, with 1
and 2 worker processes, and the CPU time per message of the senders and of the sink.

Target (issue 6): the pipeline at >= 50% of the raw loop's rate.

    .venv/bin/python bench/digest.py                                  # SQLite, 20,000 employees
    .venv/bin/python bench/digest.py --employees 5000 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:55432/postgres --broker-url redis://127.0.0.1:56379/11
"""
from __future__ import annotations

import argparse
import os
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._support import cpu_seconds, free_port, prepare_database  # noqa: E402


# ---- the sink: a separate process that accepts and counts --------------------------------

def serve_sink(port: int) -> None:
    from aiosmtpd.controller import Controller

    class Counting:
        count = 0

        async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, N802
            Counting.count += 1
            return "250 OK"

    controller = Controller(Counting(), hostname="127.0.0.1", port=port)
    controller.start()
    signal.sigwait([signal.SIGTERM, signal.SIGINT]) if hasattr(signal, "sigwait") else time.sleep(1e9)
    controller.stop()


def start_sink(port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, __file__, "--serve-sink", str(port)])
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("sink did not start")


# ---- setup -------------------------------------------------------------------------------

def seed_org(db, n: int, label: str) -> int:  # noqa: ANN001
    from sqlalchemy import insert

    from shared.db import utcnow
    from shared.domain import accounts, digests
    from shared.models import Article, ArticleStatus, Employee, SourceFormat

    with db.session(unscoped=True) as session:
        org = accounts.create_organisation(session, f"Bench {label}", f"hr-{label}-{uuid.uuid4().hex[:6]}@bench.example", "correct-horse-battery")
        org_id = org.id
    now = utcnow()
    with db.session(org_id) as session:
        for start in range(0, n, 5000):
            session.execute(insert(Employee), [
                {"org_id": org_id, "external_id": f"{label}{i}", "email": f"{label}{i}@staff.example", "first_name": f"First{i}",
                 "last_name": f"Last{i}", "timezone": "UTC", "digest_weekday": 0, "digest_hour": 9, "digest_topics": [],
                 "created_at": now, "updated_at": now}
                for i in range(start, min(n, start + 5000))])
        for k in range(8):
            session.add(Article(title=f"Wellbeing article {k}", summary="A short summary of the article for the digest.",
                                source_format=SourceFormat.TEXT, body_source="x", body_html="<p>x</p>", body_text="x",
                                status=ArticleStatus.PUBLISHED, published_at=now))
        config = digests.get_settings(session)
        config.rate_per_second = 1_000_000  # measure the pipeline, not the limiter
    return org_id


def worker_env(settings) -> dict[str, str]:  # noqa: ANN001
    return {**os.environ, "DATABASE_URL": settings.database_url, "BROKER_URL": settings.broker_url, "SMTP_URL": settings.smtp_url,
            "MAIL_FROM": settings.mail_from, "PUBLIC_URL": settings.public_url, "SECRET_KEY": settings.secret_key,
            "WELLBEING_ENV": "testing", "LOG_LEVEL": "WARNING"}


# ---- the two measurements ----------------------------------------------------------------

def sample_digest(db, settings):  # noqa: ANN001
    """One employee's digest, rendered by the product once (the same articles and
    templates as the pipeline's): what the raw loop sends, pre-rendered, to every recipient."""
    from sqlalchemy import select

    from shared.db import utcnow
    from shared.domain import digests
    from shared.models import Employee

    org_id = seed_org(db, 1, "raw")
    with db.session(org_id) as session:
        employee = session.scalar(select(Employee))
        return digests.personalise(settings, digests.batch_context(session, utcnow().date()), employee, "2026-W48", set(), [])


def raw_loop(settings, rendered, n: int, port: int, sink_pid: int) -> tuple[float, dict]:  # noqa: ANN001
    """One pre-rendered message per recipient over one smtplib connection. Returns msg/s
    and the CPU milliseconds per message of the sending loop and of the sink."""
    from shared.domain import digest_render

    messages = [(f"raw{i}@staff.example", digest_render.build_raw(settings, f"raw{i}@staff.example", rendered, f"<raw-{i}@bench>"))
                for i in range(n)]
    started, cpu, sink_cpu = time.perf_counter(), time.process_time(), cpu_seconds([sink_pid])
    with smtplib.SMTP("127.0.0.1", port) as client:
        for to, raw in messages:
            client.sendmail("wellbeing@bench.example", [to], raw)
    elapsed = time.perf_counter() - started
    return n / elapsed, {"sender": (time.process_time() - cpu) * 1000 / n, "sink": (cpu_seconds([sink_pid]) - sink_cpu) * 1000 / n}


def pipeline(db, settings, org_id: int, n: int, workers: int, workdir: Path, sink_pid: int) -> tuple[float, dict, dict]:  # noqa: ANN001
    """Workers started and idle first; timed from the due-check to the last send recorded.
    Returns msg/s, the sends by state and the CPU milliseconds per message of the worker
    processes and of the sink."""
    from sqlalchemy import func, select

    from shared.domain import digests
    from shared.models import DigestSend
    from workers.celery_app import configure
    from workers.tasks.digests import enqueue_batches

    configure(settings)
    command = [str(ROOT / ".venv" / "bin" / "wellbeing"), "worker", "--pool=solo", "--without-gossip", "--without-mingle",
               "--without-heartbeat", "--loglevel=WARNING", "-n", "bench%d@%%h"]
    procs = [subprocess.Popen([*command[:-1], command[-1] % i], env=worker_env(settings), cwd=ROOT,
                              stdout=open(workdir / f"worker{i}.log", "ab"), stderr=subprocess.STDOUT) for i in range(workers)]  # noqa: SIM115
    try:
        pids = [p.pid for p in procs]
        # Started and idle: on a loaded machine a worker's start-up (imports, broker
        # connection) can take longer than any fixed wait, and would be counted.
        time.sleep(2)
        for _ in range(120):
            before = cpu_seconds(pids)
            time.sleep(0.5)
            if cpu_seconds(pids) - before < 0.02 * len(pids):
                break
        started, worker_cpu, sink_cpu = time.perf_counter(), cpu_seconds(pids), cpu_seconds([sink_pid])
        with db.session(org_id) as session:
            result = digests.due_check(session, datetime(2026, 11, 23, 9, 30, tzinfo=timezone.utc))
        enqueue_batches(org_id, result.batches)
        while True:
            with db.session(org_id) as session:
                pending = session.scalar(select(func.count()).select_from(DigestSend).where(DigestSend.state.in_(["queued", "sending"])))
            if pending == 0:
                break
            time.sleep(0.05)  # the clock stops within 50 ms of the last send recorded
        elapsed = time.perf_counter() - started
        cpu = {"workers": (cpu_seconds(pids) - worker_cpu) * 1000 / n, "sink": (cpu_seconds([sink_pid]) - sink_cpu) * 1000 / n}
        with db.session(org_id) as session:
            counts = dict(session.execute(select(DigestSend.state, func.count()).group_by(DigestSend.state)).all())
        return result.created / elapsed, {getattr(k, "value", k): v for k, v in counts.items()}, cpu
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--employees", type=int, default=20_000)
    parser.add_argument("--database-url", default=None, help="PostgreSQL admin URL (a database is created and dropped); default SQLite")
    parser.add_argument("--broker-url", default=None, help="Default: a SQLite file broker (use Redis with PostgreSQL)")
    parser.add_argument("--workers", default="1,2", help="Worker process counts to measure, comma separated")
    parser.add_argument("--serve-sink", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_sink is not None:
        serve_sink(args.serve_sink)
        return

    from shared.config import load_settings
    from shared.db import Database
    from shared.domain import digest_render

    workdir = Path(tempfile.mkdtemp(prefix="wellbeing-bench-digest-"))
    database_url, drop = prepare_database(args.database_url, workdir)
    broker = args.broker_url or f"sqla+sqlite:///{workdir / 'broker.db'}"
    if broker.startswith("redis"):
        import redis

        redis.Redis.from_url(broker).flushdb()
    port = free_port()
    sink = start_sink(port)
    try:
        settings = load_settings({"DATABASE_URL": database_url, "BROKER_URL": broker, "SMTP_URL": f"smtp://127.0.0.1:{port}",
                                  "MAIL_FROM": "Wellbeing <wellbeing@bench.example>", "PUBLIC_URL": "http://wellbeing.bench",
                                  "SECRET_KEY": "bench-secret-key-0123456789abcdef", "WELLBEING_ENV": "testing", "LOG_LEVEL": "WARNING",
                                  "WELLBEING_DATA_DIR": str(workdir)})
        db = Database(database_url)
        backend = "PostgreSQL" if database_url.startswith("postgresql") else "SQLite"
        print(f"{args.employees} employees, {backend}, broker {broker.split(':')[0]}, sink in its own process", flush=True)
        rendered = sample_digest(db, settings)
        print(f"raw loop message: one rendered digest, {len(digest_render.build_raw(settings, 'raw@staff.example', rendered, '<m@bench>'))} bytes",
              flush=True)
        def baseline() -> float:
            raw, raw_cpu = raw_loop(settings, rendered, args.employees, port, sink.pid)
            print(f"raw smtplib loop (pre-rendered, 1 connection)   {raw:8.1f} msg/s"
                  f"  CPU ms/msg: loop {raw_cpu['sender']:.2f}, sink {raw_cpu['sink']:.2f}", flush=True)
            return raw

        for workers in [int(w) for w in args.workers.split(",")]:
            # The baseline is measured right before and right after each pipeline run (the
            # load on a shared machine drifts), and the ratio is taken to the faster of the
            # two: the conservative reading.
            before = baseline()
            org_id = seed_org(db, args.employees, f"w{workers}x")
            rate, counts, cpu = pipeline(db, settings, org_id, args.employees, workers, workdir, sink.pid)
            print(f"pipeline, {workers} worker process{'es' if workers > 1 else '  '}                 {rate:8.1f} msg/s"
                  f"  sends {counts}  CPU ms/msg: workers {cpu['workers']:.2f}, sink {cpu['sink']:.2f}", flush=True)
            raw = max(before, baseline())
            print(f"ratio, {workers} worker process{'es' if workers > 1 else '  '}: {rate / raw:.2f} of the faster raw loop"
                  f" (target >= 0.50)", flush=True)
        db.dispose()
    finally:
        sink.terminate()
        sink.wait(10)
        drop()


if __name__ == "__main__":
    main()
