"""Graceful shutdown (slow): a digest worker told to stop (SIGTERM, Celery's warm
shutdown) in the middle of a run finishes the batches it is sending, hands the ones it
has not started back to the broker, and exits. Nothing is lost and nothing is sent
twice, with no help from the recovery sweep (no beat runs here): a new worker simply
carries on from the queue."""
from __future__ import annotations

import signal

import pytest

from shared.domain import digests
from tests.conftest import make_settings
from tests.digest_support import add_article, add_employees, per_recipient
from tests.worker_support import Publisher, send_counts, shared_broker, start_worker, stop_group, wait_for, worker_env

pytestmark = pytest.mark.slow

EMPLOYEES = 1200
STOPS = 2


@pytest.mark.prints_counts
def test_sigterm_mid_run_loses_and_repeats_nothing(db, settings, tenant, smtp_sink, tmp_path, monkeypatch):
    # Twelve batches, so that two stops each find batches not started yet.
    monkeypatch.setattr(digests, "BATCH_SIZE", EMPLOYEES // 12)
    run_settings = make_settings(settings.database_url, shared_broker(settings, tmp_path), smtp_sink.port)
    env = worker_env(run_settings)
    publisher = Publisher(run_settings.broker_url)
    add_employees(db, tenant.org_id, EMPLOYEES, prefix="g")
    add_article(db, tenant.org_id, "Take the stairs")
    with db.session(tenant.org_id) as session:
        _, batches = digests.start_run(session, None, "2026-W48")
    for batch in batches:
        publisher.send("workers.tasks.digests.send_digest_batch", tenant.org_id, batch)
    log_path = tmp_path / "worker.log"
    # The production shape: prefork pool, two processes.
    worker_args = ("--concurrency", "2")
    worker = None
    stops = []
    try:
        for stop in range(STOPS):
            worker = start_worker(env, log_path, *worker_args, "--hostname", f"digests@stop{stop}")
            target = len(smtp_sink.messages) + 120
            wait_for(lambda: len(smtp_sink.messages) >= target, 90, 0.02, "the worker to send")  # noqa: B023
            in_flight = send_counts(db, [tenant.org_id])["sending"]
            worker.send_signal(signal.SIGTERM)  # the main process: Celery's warm shutdown
            code = worker.wait(90)
            after = send_counts(db, [tenant.org_id])
            stops.append({"in_flight_at_sigterm": in_flight, "exit": code, **after, "in_sink": len(smtp_sink.messages)})
            assert code == 0, log_path.read_text()[-3000:]
            # The batches it was sending were finished: no claim is left behind for recovery...
            assert after["sending"] == 0, stops[-1]
            # ...and every "sent" row was handed to SMTP exactly once so far.
            assert after["sent"] == len(smtp_sink.messages) == len({m["Message-ID"] for m in smtp_sink.messages}), stops[-1]
            assert after["queued"] > 0, f"the run finished before the worker was stopped: {stops}"
        assert any(s["in_flight_at_sigterm"] > 0 for s in stops), stops
        # Whatever was not started is still in the broker: a new worker finishes the run.
        worker = start_worker(env, log_path, *worker_args, "--hostname", "digests@final")
        wait_for(lambda: send_counts(db, [tenant.org_id])["sent"] == EMPLOYEES, 120, 0.5, "every send to be sent")
        stop_group(worker)
    finally:
        if worker is not None:
            stop_group(worker)
        publisher.close()
    messages = smtp_sink.wait_for(EMPLOYEES, timeout=5)
    raw, distinct = per_recipient(messages)
    pairs = {(m["To"], m["Message-ID"]) for m in messages}
    print(f"\n[graceful-shutdown] employees={EMPLOYEES} batches={len(batches)} stops={stops} messages={len(messages)} "
          f"recipients={len(raw)} distinct(recipient, Message-ID)={len(pairs)}")
    assert send_counts(db, [tenant.org_id]) == {"queued": 0, "sending": 0, "sent": EMPLOYEES, "failed": 0, "skipped": 0}
    assert len(messages) == len(pairs) == len(raw) == EMPLOYEES
    assert set(raw.values()) == {1}
