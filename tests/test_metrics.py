"""Prometheus metrics: request latency by endpoint, task durations and failures."""
import time

from celery import shared_task
from prometheus_client import REGISTRY

from services.app import create_app
from tests.conftest import make_settings


@shared_task(name="tests.always_fails")
def always_fails() -> None:
    raise ValueError("boom")


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_request_latency_by_endpoint(client, tenant):
    before = _sample("wellbeing_http_request_duration_seconds_count", method="GET", endpoint="users.UserListView", status="200")
    for _ in range(3):
        assert client.get("/api/v1/users", headers=tenant.headers).status_code == 200
    client.get("/api/v1/users/987654", headers=tenant.headers)
    scrape = client.get("/metrics")
    assert scrape.status_code == 200 and scrape.mimetype == "text/plain"
    text = scrape.get_data(as_text=True)
    assert 'wellbeing_http_request_duration_seconds_bucket{endpoint="users.UserListView",le="0.005",method="GET",status="200"}' in text
    assert _sample("wellbeing_http_request_duration_seconds_count", method="GET", endpoint="users.UserListView", status="200") == before + 3
    assert 'endpoint="users.UserItemView"' in text and 'status="404"' in text
    assert "987654" not in text  # ids never become labels


def test_metrics_token_guards_the_scrape(database_url, broker_url, smtp_sink, db):
    client = create_app(make_settings(database_url, broker_url, smtp_sink.port, METRICS_TOKEN="scrape-secret")).test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"}).status_code == 200


def test_task_duration_and_failures_are_counted(settings, celery_worker):
    from workers.tasks.mail import send_invitation

    before = _sample("wellbeing_task_duration_seconds_count", task=send_invitation.name, outcome="success")
    send_invitation.delay(424242, 1)  # no such organisation: the task finds nothing to send and succeeds
    deadline = time.monotonic() + 30
    while _sample("wellbeing_task_duration_seconds_count", task=send_invitation.name, outcome="success") == before:
        assert time.monotonic() < deadline, "task duration was not recorded"
        time.sleep(0.05)


def test_task_failures_are_counted(settings, celery_worker):
    before = _sample("wellbeing_task_failures_total", task="tests.always_fails")
    always_fails.delay()
    deadline = time.monotonic() + 30
    while _sample("wellbeing_task_failures_total", task="tests.always_fails") == before:
        assert time.monotonic() < deadline, "task failure was not counted"
        time.sleep(0.05)
    assert _sample("wellbeing_task_duration_seconds_count", task="tests.always_fails", outcome="failure") >= 1
