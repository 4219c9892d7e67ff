"""Prometheus metrics. Under gunicorn every worker process writes to a shared
directory (PROMETHEUS_MULTIPROC_DIR, set by ``wellbeing api``) and a scrape of any
worker reports the sum of all of them."""
from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess

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


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
