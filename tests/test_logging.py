"""JSON logs carry the request id, into Celery tasks too, and never a full email address."""
import json
import logging
import time

from celery import shared_task

from shared.logging import ContextFilter, mask_emails, request_id_var

SEEN: dict[str, str | None] = {}


@shared_task(name="tests.record_request_id")
def record_request_id() -> None:
    SEEN["request_id"] = request_id_var.get()


def test_request_id_is_echoed_or_generated(client):
    assert client.get("/healthz", headers={"X-Request-ID": "abc12345-req"}).headers["X-Request-ID"] == "abc12345-req"
    generated = client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"}).headers["X-Request-ID"]
    assert len(generated) == 32 and " " not in generated


def test_request_id_travels_into_celery_tasks(app, celery_worker):
    with app.test_request_context("/"):
        request_id_var.set("req-1234567890")
        result = record_request_id.apply_async()
    deadline = time.monotonic() + 15
    while "request_id" not in SEEN and time.monotonic() < deadline:
        time.sleep(0.05)
    assert result.id
    assert SEEN["request_id"] == "req-1234567890"


def test_emails_are_masked_in_logs():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "sent digest to %s", ("jane.doe@example.com",), None)
    ContextFilter().filter(record)
    assert record.getMessage() == "sent digest to j***@example.com"
    assert mask_emails("a@b.co and bob.smith@corp.example.org") == "a***@b.co and b***@corp.example.org"


def test_log_lines_are_json_with_request_id():
    import io

    from shared.logging import configure_logging

    stream = io.StringIO()
    configure_logging("INFO", stream)
    token = request_id_var.set("req-logline-1")
    try:
        logging.getLogger("services.test").warning("inside %s", "x@y.org")
    finally:
        request_id_var.reset(token)
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["request_id"] == "req-logline-1" and line["message"] == "inside x***@y.org"
    assert line["level"] == "WARNING" and line["logger"] == "services.test"
