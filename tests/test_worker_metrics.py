"""A production worker serves its pool's task metrics (WORKER_METRICS_BIND): the API's
/metrics runs in other processes, usually on other hosts, and cannot see them."""
from __future__ import annotations

import re
import urllib.request

from tests.conftest import free_port
from tests.worker_support import Publisher, shared_broker, start_worker, stop_group, wait_for, worker_env

TASK = "workers.tasks.articles.publish_due_articles"


def _runs(url: str) -> float:
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    found = re.search(rf'wellbeing_task_duration_seconds_count{{outcome="success",task="{re.escape(TASK)}"}} (\S+)', body)
    return float(found.group(1)) if found else 0.0


def test_a_worker_serves_the_task_metrics_of_its_whole_pool(settings, db, tmp_path):  # noqa: ANN001
    broker = shared_broker(settings, tmp_path)
    port = free_port()
    env = worker_env(settings, BROKER_URL=broker, WORKER_METRICS_BIND=f"127.0.0.1:{port}", WELLBEING_DATA_DIR=str(tmp_path))
    worker = start_worker(env, tmp_path / "worker.log", "--pool=prefork", "--concurrency=2")
    publisher = Publisher(broker)
    try:
        url = f"http://127.0.0.1:{port}/metrics"

        def serving() -> bool:
            try:
                return _runs(url) == 0.0
            except OSError:
                return False

        wait_for(serving, 60, what="the worker's metrics endpoint")
        for _ in range(6):
            publisher.send(TASK)
        # The pool's processes run the tasks; the main process serves the sum of their samples.
        wait_for(lambda: _runs(url) == 6.0, 60, what="six task runs in the worker's metrics")
    finally:
        publisher.close()
        stop_group(worker)
