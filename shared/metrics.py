"""Prometheus metrics. Under gunicorn every worker process writes to a shared
directory (PROMETHEUS_MULTIPROC_DIR, set by ``wellbeing api``) and a scrape of any
worker reports the sum of all of them."""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, start_http_server
from prometheus_client import multiprocess
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)

HTTP_REQUEST_SECONDS = Histogram(
    "wellbeing_http_request_duration_seconds",
    "Time to answer an HTTP request, by endpoint",
    ["method", "endpoint", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
TASK_SECONDS = Histogram(
    "wellbeing_task_duration_seconds",
    "Time a Celery task ran, by task and outcome",
    ["task", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800),
)
TASK_FAILURES = Counter("wellbeing_task_failures_total", "Celery task runs that raised, by task", ["task"])


class OperationalState:
    """Gauges read at scrape time from the shared state, so every API process reports
    the same figures: digest sends by state (all organisations) from the database, and
    the number of tasks waiting in each Celery queue from the broker."""

    def __init__(self, database, celery_app, queues: Iterable[str]):  # noqa: ANN001
        self.database, self.celery_app, self.queues = database, celery_app, tuple(queues)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        sends = GaugeMetricFamily("wellbeing_digest_sends", "Digest sends by state, all organisations", labels=["state"])
        for state, count in self._send_counts().items():
            sends.add_metric([state], count)
        yield sends
        depths = self._queue_depths()
        if depths is not None:
            queued = GaugeMetricFamily("wellbeing_celery_queue_length", "Tasks waiting in a Celery queue", labels=["queue"])
            for queue, count in depths.items():
                queued.add_metric([queue], count)
            yield queued

    def _send_counts(self) -> dict[str, int]:
        from sqlalchemy import func, select

        from shared.models import DigestSend, SendState

        counts = {state.value: 0 for state in SendState}
        with self.database.session(unscoped=True) as session:
            for state, count in session.execute(select(DigestSend.state, func.count()).group_by(DigestSend.state)):
                counts[SendState(state).value] = count
        return counts

    def _queue_depths(self) -> dict[str, int] | None:
        try:
            with self.celery_app.connection_for_read() as connection:
                connection.ensure_connection(max_retries=1, timeout=2)
                channel = connection.default_channel
                # A declare (not passive): on Redis an empty queue has no key, and a
                # passive declare of it would fail.
                return {name: channel.queue_declare(queue=name, durable=True, auto_delete=False).message_count for name in self.queues}
        except Exception as error:  # noqa: BLE001 - a broker outage must not break the scrape (/readyz reports it)
            log.warning("queue depth unavailable: %s", type(error).__name__)
            return None


def serve_pool_metrics(host: str, port: int) -> None:
    """Serve the sum of this process's and its children's samples (a Celery worker's
    pool, written to PROMETHEUS_MULTIPROC_DIR) at http://host:port/, from a thread of
    the main process; the API's /metrics runs in other processes, often other hosts."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    start_http_server(port, addr=host, registry=registry)


def render(*live: OperationalState) -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        from prometheus_client import REGISTRY

        body = generate_latest(REGISTRY)
    if live:
        scrape_time = CollectorRegistry(auto_describe=False)
        for collector in live:
            scrape_time.register(collector)
        body += generate_latest(scrape_time)
    return body, CONTENT_TYPE_LATEST
