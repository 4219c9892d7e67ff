"""``wellbeing dev``: the whole product on the embedded default, in one process group."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import click

from shared.config import ConfigError, load_settings

CHILD_STOP_SECONDS = 10


def _spawn(name: str, args: list[str], env: dict[str, str]) -> tuple[str, subprocess.Popen]:
    # Own session per child so a signal reaches the whole subtree (Celery forks its pool).
    return name, subprocess.Popen([sys.executable, *args], env=env, start_new_session=True)


def _stop(children: list[tuple[str, subprocess.Popen]]) -> None:
    for _name, proc in children:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + CHILD_STOP_SECONDS
    for _name, proc in children:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def _wait_ready(url: str, children: list[tuple[str, subprocess.Popen]], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in children:
            if proc.poll() is not None:
                raise click.ClickException(f"{name} exited with code {proc.returncode} during start-up")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise click.ClickException(f"the API did not become ready at {url}/readyz within {timeout:.0f}s")


def run(port: int) -> None:
    env = dict(os.environ, WELLBEING_ENV="development")
    env.setdefault("PUBLIC_URL", f"http://127.0.0.1:{port}")
    try:
        settings = load_settings(env)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    env["WELLBEING_DATA_DIR"] = str(settings.data_dir)

    from shared.db import Database
    from shared.domain import demo
    from shared.migrate import upgrade

    upgrade(settings.database_url)
    database = Database(settings.database_url)
    with database.session(unscoped=True) as session:
        organisation = demo.ensure_demo_organisation(session)
        org_id = organisation.id
    database.dispose()

    cli = ["-m", "services.cli"]
    children = [
        _spawn("smtp-sink", ["-m", "services.smtp_sink", "--host", settings.smtp.host, "--port", str(settings.smtp.port), "--maildir", str(settings.mailbox_dir)], env),
        _spawn("worker", [*cli, "worker", "--concurrency=2", "--hostname=dev@%h"], env),
        _spawn("beat", [*cli, "beat"], env),
        _spawn("api", ["-c", f"from services.cli import _settings; from services.gunicorn_app import serve; serve(_settings(), '127.0.0.1', {port}, workers=1)"], env),
    ]
    stopping = False

    def _on_signal(signum, _frame):  # noqa: ANN001
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        _wait_ready(settings.public_url, children)
        click.echo(
            "\n"
            f"  Wellbeing is running on the embedded default.\n"
            f"  Console:  {settings.public_url}/console/  (organisation id {org_id})\n"
            f"  Login:    {demo.DEMO_ADMIN_EMAIL} / {demo.DEMO_ADMIN_PASSWORD}\n"
            f"  API docs: {settings.public_url}/api/v1/docs\n"
            f"  Mailbox:  {settings.public_url}/console/mailbox  (SMTP sink on {settings.smtp.host}:{settings.smtp.port})\n"
            f"  Data:     {settings.data_dir}\n"
            "  Press Ctrl-C to stop.\n",
        )
        while not stopping:
            for name, proc in children:
                if proc.poll() is not None:
                    raise click.ClickException(f"{name} exited with code {proc.returncode}; stopping")
            time.sleep(0.5)
    finally:
        _stop(children)
        click.echo("stopped")
