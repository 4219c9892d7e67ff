"""docker-compose.yml cannot be started here (no Docker), so its essentials are checked
by reading it: every application service runs a real ``wellbeing`` command, every
Celery queue has a worker service, the broker never evicts and persists, the data
lives on volumes, there is exactly one beat, and long-running services are health-checked."""
from __future__ import annotations

from pathlib import Path

import click
import pytest
import yaml

from celery.bin.base import CLIContext
from celery.bin.beat import beat as celery_beat
from celery.bin.worker import worker as celery_worker

from services.cli import main as wellbeing_cli
from workers.celery_app import QUEUES, TASK_ROUTES, celery_app, queue_settings

COMPOSE = yaml.safe_load((Path(__file__).resolve().parent.parent / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = {name: s for name, s in SERVICES.items() if s.get("image") == "wellbeing:latest"}


def _option(command: list[str], *names: str) -> str | None:
    for i, word in enumerate(command):
        for name in names:
            if word == name:
                return command[i + 1]
            if word.startswith(name + "="):
                return word.split("=", 1)[1]
    return None


def _resolve(command: list[str]) -> tuple[click.Command, list[str]]:
    """The click command a ``wellbeing ...`` argument list runs and its own arguments
    (fails on an unknown subcommand)."""
    assert command[0] == "wellbeing", command
    found: click.Command = wellbeing_cli
    words = command[1:]
    while isinstance(found, click.Group):
        assert words, f"`{' '.join(command)}` names a group, not a command"
        sub = found.get_command(click.Context(found), words[0])
        assert sub is not None, f"`{' '.join(command)}`: no such wellbeing subcommand {words[0]!r}"
        found, words = sub, words[1:]
    return found, words


def test_the_expected_services_exist():
    assert {"postgres", "redis", "mailpit", "migrate", "api", "worker-digests", "worker-reports", "worker-default", "beat", "mail-inbound", "flower"} <= set(SERVICES)
    assert set(APP_SERVICES) == {"migrate", "api", "worker-digests", "worker-reports", "worker-default", "beat", "mail-inbound"}


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_every_application_service_runs_a_real_wellbeing_command(name):
    command, args = _resolve(APP_SERVICES[name]["command"])
    # Parsing the arguments fails on an unknown option; worker and beat hand theirs to Celery.
    command.make_context(command.name, list(args))
    if command.name in ("worker", "beat"):
        _celery_params(APP_SERVICES[name]["command"])


def _celery_params(command: list[str]) -> dict:
    """The options of ``wellbeing worker|beat ...`` as Celery's own command parses them."""
    celery_command = {"worker": celery_worker, "beat": celery_beat}[command[1]]
    obj = CLIContext(app=celery_app, no_color=True, workdir=None)
    return celery_command.make_context(command[1], list(command[2:]), obj=obj).params


def test_every_queue_has_a_worker_service_and_routes_name_real_queues():
    consumed: dict[str, list[str]] = {}
    for name, service in APP_SERVICES.items():
        command = service["command"]
        if command[:2] != ["wellbeing", "worker"]:
            continue
        params = _celery_params(command)
        assert params["queues"], f"{name}: a worker service must say which queues it consumes"
        assert _option(command, "--hostname", "-n").endswith("@%h"), f"{name}: name the worker per queue (queue@%h)"
        for queue in params["queues"]:
            consumed.setdefault(queue, []).append(name)
    assert set(consumed) == set(QUEUES), consumed
    assert {route["queue"] for route in TASK_ROUTES.values()} <= set(QUEUES)
    assert consumed["digests"] == ["worker-digests"] and consumed["reports"] == ["worker-reports"]


def test_redis_never_evicts_and_persists_on_a_volume():
    redis = SERVICES["redis"]
    command = redis["command"]
    assert _option(command, "--maxmemory-policy") == "noeviction"
    assert _option(command, "--appendonly") == "yes"
    assert any(v.split(":")[0] in COMPOSE["volumes"] and v.split(":")[1] == "/data" for v in redis["volumes"])
    broker = COMPOSE["x-app-env"]["BROKER_URL"]
    assert broker.startswith("redis://redis:6379/")


def test_postgres_keeps_its_data_on_a_volume_and_the_app_uses_it():
    postgres = SERVICES["postgres"]
    assert any(v.split(":")[0] in COMPOSE["volumes"] and v.split(":")[1] == "/var/lib/postgresql/data" for v in postgres["volumes"])
    assert COMPOSE["x-app-env"]["DATABASE_URL"].startswith("postgresql+psycopg://") and "@postgres:5432/" in COMPOSE["x-app-env"]["DATABASE_URL"]
    assert COMPOSE["x-app-env"]["SMTP_URL"] == "smtp://mailpit:1025"
    assert COMPOSE["x-app-env"]["WELLBEING_ENV"] == "production"


def test_exactly_one_beat_and_health_checks_on_long_running_services():
    beats = [name for name, s in APP_SERVICES.items() if s["command"][:2] == ["wellbeing", "beat"]]
    assert beats == ["beat"] and "deploy" not in SERVICES["beat"] and "scale" not in SERVICES["beat"]
    for name, service in SERVICES.items():
        if name == "migrate":
            assert service["restart"] == "no"  # a one-shot job
            continue
        assert "healthcheck" in service, f"{name} has no healthcheck"


def test_workers_and_api_get_time_for_a_graceful_shutdown():
    for name in ("api", "worker-digests", "worker-reports", "worker-default"):
        grace = SERVICES[name]["stop_grace_period"]
        seconds = int(grace[:-1]) * (60 if grace.endswith("m") else 1)
        assert seconds > 30, f"{name}: stop_grace_period {grace} is shorter than gunicorn's graceful_timeout"


def test_flower_is_optional_and_not_exposed():
    flower = SERVICES["flower"]
    assert flower["profiles"] == ["flower"]
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])
    assert "FLOWER_BASIC_AUTH" in flower["environment"]
    assert "--broker=" + COMPOSE["x-app-env"]["BROKER_URL"] in flower["command"]


def test_digest_and_report_tasks_go_to_their_queues_and_the_rest_to_default(settings):
    from workers.celery_app import configure

    app = configure(settings)
    app.loader.import_default_modules()
    ours = [name for name in app.tasks if name.startswith("workers.tasks.")]
    assert len(ours) > 10
    for name in ours:
        queue = app.amqp.router.route({}, name)["queue"].name
        expected = "digests" if ".digests." in name else "reports" if ".reports." in name else "default"
        assert queue == expected, f"{name} -> {queue}"
    # A worker started without -Q (as `wellbeing dev` starts it) consumes every queue.
    assert set(app.amqp.queues) == set(QUEUES)
    # Each queue has its own binding: with a shared routing key, a message published
    # through the exchange would be copied into every queue and run once per queue.
    assert {q.name: (q.exchange.name, q.routing_key) for q in app.amqp.queues.values()} == {
        name: ("default", name) for name in QUEUES}


def test_the_embedded_broker_keeps_everything_on_default():
    settings = queue_settings("sqla+sqlite:///var/broker.db")
    assert [q.name for q in settings["task_queues"]] == ["default"] and settings["task_routes"] == {}
    assert queue_settings("redis://redis:6379/0")["task_routes"] == TASK_ROUTES
