"""The ``wellbeing`` console script: run the processes and operate the platform."""
from __future__ import annotations

import os
import sys

import click

from shared.config import ConfigError, Settings, load_settings

PRODUCTION_PROCESS_DEFAULT_ENV = "production"


def _settings(default_environment: str = "development") -> Settings:
    """Settings for this command, or a clean exit naming the bad variable."""
    environment = os.environ.get("WELLBEING_ENV") or default_environment
    try:
        return load_settings(environment=environment)
    except ConfigError as error:
        click.echo(f"wellbeing: {error}", err=True)
        sys.exit(2)


def _database(settings: Settings):
    from shared.db import Database

    return Database(settings.database_url)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Employee wellbeing platform."""


@main.command()
@click.option("--port", default=8000, show_default=True, help="Port of the API and console.")
def dev(port: int) -> None:
    """Run everything on the embedded default: API, worker, beat and an SMTP sink."""
    from services import dev as dev_runner

    dev_runner.run(port)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
def api(host: str, port: int) -> None:
    """Run the API and console under gunicorn (production process)."""
    from services.gunicorn_app import serve

    settings = _settings(PRODUCTION_PROCESS_DEFAULT_ENV)
    serve(settings, host, port)


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run a Celery worker (production process); extra arguments go to Celery."""
    from workers.celery_app import configure

    app = configure(_settings(PRODUCTION_PROCESS_DEFAULT_ENV))
    app.worker_main(["worker", "--loglevel=INFO", *ctx.args])


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def beat(ctx: click.Context) -> None:
    """Run Celery beat, the scheduler (production process; run exactly one)."""
    from workers.celery_app import configure

    settings = _settings(PRODUCTION_PROCESS_DEFAULT_ENV)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = configure(settings)
    app.start(["beat", "--loglevel=INFO", "--schedule", str(settings.data_dir / "celerybeat-schedule"), *ctx.args])


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration."""
    from shared.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url)
    click.echo("database is up to date")


@main.group()
def org() -> None:
    """Organisations (platform operator)."""


@org.command("create")
@click.option("--name", required=True)
@click.option("--admin-email", required=True)
@click.option("--admin-password", required=True, help="At least 12 characters.")
def org_create(name: str, admin_email: str, admin_password: str) -> None:
    """Create an organisation and its first HR admin; prints the organisation's id."""
    from shared.domain import accounts
    from shared.errors import DomainError

    database = _database(_settings())
    try:
        with database.session(unscoped=True) as session:
            organisation = accounts.create_organisation(session, name, admin_email, admin_password)
    except DomainError as error:
        details = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in error.errors.items())
        raise click.ClickException(f"{error.detail}{' (' + details + ')' if details else ''}") from None
    click.echo(organisation.id)


if __name__ == "__main__":
    main()
