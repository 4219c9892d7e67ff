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
    """Run a Celery worker (production process); extra arguments go to Celery.
    With WORKER_METRICS_BIND set it serves its pool's task metrics there."""
    settings = _settings(PRODUCTION_PROCESS_DEFAULT_ENV)
    if settings.worker_metrics_bind:
        from services.gunicorn_app import prepare_metrics_dir

        host, port = settings.worker_metrics_bind
        # A folder of its own: the pool's processes write their samples there.
        prepare_metrics_dir(settings.data_dir / f"prometheus-worker-{port}")
    from workers.celery_app import configure

    app = configure(settings)
    if settings.worker_metrics_bind:
        from shared.metrics import serve_pool_metrics

        serve_pool_metrics(*settings.worker_metrics_bind)
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


@main.command("mail-inbound")
def mail_inbound() -> None:
    """Receive mail to the List-Unsubscribe mailto: addresses and unsubscribe (binds MAIL_INBOUND_BIND)."""
    from services.mail_inbound import serve
    from shared.logging import configure_logging

    settings = _settings(PRODUCTION_PROCESS_DEFAULT_ENV)
    configure_logging(settings.log_level)
    serve(settings)


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


@main.group()
def employees() -> None:
    """Employees (HRIS import)."""


@employees.command("import")
@click.option("--org", "org_id", required=True, type=int, help="Organisation id.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--atomic", is_flag=True, help="Any error: apply nothing.")
@click.option("--dry-run", is_flag=True, help="Validate and report only.")
@click.option("--mark-missing-as-left", is_flag=True, help="Full sync: employees absent from the file become 'left'.")
def employees_import(org_id: int, file: str, atomic: bool, dry_run: bool, mark_missing_as_left: bool) -> None:
    """Import employees from an HRIS CSV file (streamed: any size). Exit status 1 if any row was bad."""
    from shared.domain import accounts
    from shared.domain.employee_import import ImportOptions, import_employees
    from shared.errors import DomainError
    from shared.models import ImportMode

    database = _database(_settings())
    mode = ImportMode.DRY_RUN if dry_run else ImportMode.ATOMIC if atomic else ImportMode.PARTIAL
    session = database.open(org_id)
    try:
        try:
            org = accounts.get_organisation(session, org_id)
        except DomainError as error:
            raise click.ClickException(error.detail) from None
        options = ImportOptions(mode=mode, mark_missing_as_left=mark_missing_as_left, default_timezone=org.default_timezone)
        report = import_employees(session, lambda: open(file, "rb"), options, None, commit=session.commit)
        session.commit()
    finally:
        session.close()
    for error in report.errors:
        column = f", column {error['column']}" if error["column"] else ""
        click.echo(f"line {error['line']}{column}: {error['kind']}: {error['message']}", err=True)
    if report.error_count > len(report.errors):
        click.echo(f"... and {report.error_count - len(report.errors)} more errors", err=True)
    click.echo(
        f"{mode.value}: rows {report.rows_total}, created {report.created}, updated {report.updated}, "
        f"unchanged {report.unchanged}, marked left {report.marked_left}, rows with errors {report.error_rows}, "
        f"{'applied' if report.applied else 'nothing applied'}"
    )
    if report.error_rows:
        sys.exit(1)


@main.group()
def articles() -> None:
    """Partner articles."""


@articles.command("import")
@click.option("--org", "org_id", required=True, type=int, help="Organisation id.")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def articles_import(org_id: int, files: tuple[str, ...]) -> None:
    """Import .txt, .md or .html partner articles as drafts (all or none) and report what was recognised."""
    from pathlib import Path

    from shared.domain import accounts
    from shared.domain import articles as article_domain
    from shared.errors import DomainError

    database = _database(_settings())
    uploads = [article_domain.Upload(Path(f).name, Path(f).read_bytes()) for f in files]
    try:
        with database.session(org_id) as session:
            accounts.get_organisation(session, org_id)
            results = article_domain.import_files(session, None, uploads)
    except DomainError as error:
        raise click.ClickException(error.detail) from None
    for r in results:
        partner = r["partner"]["name"] if r["partner"] else "none"
        state = "duplicate of" if r["duplicate"] else "created"
        click.echo(f"{r['filename']}: {state} article {r['article_id']}: {r['title']!r}{' (title proposed)' if r['title_proposed'] else ''}")
        click.echo(
            f"  partner: {partner}; bio: {'yes' if r['bio_found'] else 'no'}; sections: {r['sections']}; "
            f"captions: {len(r['captions'])}; dropped: {', '.join(r['dropped_boilerplate']) or 'nothing'}; "
            f"topics: {', '.join(r['suggested_topics']) or 'none'}"
        )


@main.group()
def digest() -> None:
    """Weekly digests."""


@digest.command("run")
@click.option("--org", "org_id", required=True, type=int, help="Organisation id.")
@click.option("--week", default=None, help="ISO week, e.g. 2026-W48 (default: the current week).")
@click.option("--inline", is_flag=True, help="Send from this process instead of handing the batches to the workers.")
def digest_run(org_id: int, week: str | None, inline: bool) -> None:
    """Start a digest run by hand: every eligible employee without this week's digest gets it now."""
    import os as _os
    import socket

    from shared.domain import accounts, digests
    from shared.errors import DomainError

    settings = _settings()
    database = _database(settings)
    try:
        with database.session(org_id) as session:
            accounts.get_organisation(session, org_id)
            run, batches = digests.start_run(session, None, week)
    except DomainError as error:
        raise click.ClickException(error.detail) from None
    click.echo(f"run {run.id} for {run.iso_week}: {run.created_count} sends created, {len(batches)} batches")
    if inline:
        worker = f"{socket.gethostname()}:{_os.getpid()}:cli"
        limiter = digests.RateLimiter(settings.broker_url)
        pending = list(batches)
        while pending:
            outcome = digests.process_batch(database, settings, org_id, pending.pop(0), worker, limiter=limiter)
            if outcome.retry_ids:
                click.echo(f"{len(outcome.retry_ids)} sends hit temporary errors; the workers retry them", err=True)
    else:
        from workers.celery_app import configure
        from workers.tasks.digests import enqueue_batches

        configure(settings)
        enqueue_batches(org_id, batches)
    with database.session(org_id) as session:
        counts = digests.run_counts(session, [run.id])[run.id]
    click.echo(", ".join(f"{k} {v}" for k, v in counts.items()))


@main.group()
def reports() -> None:
    """Anonymised activity reports."""


@reports.command("build")
@click.option("--org", "org_id", required=True, type=int, help="Organisation id.")
@click.option("--week", "weeks", multiple=True, help="ISO week to rebuild, e.g. 2026-W48 (repeatable; default: weeks with new events).")
def reports_build(org_id: int, weeks: tuple[str, ...]) -> None:
    """Build report cells now, in this process (the nightly beat task does the same)."""
    from shared.domain import accounts, activity, reports as report_domain
    from shared.domain.digest_schedule import parse_iso_week
    from shared.errors import DomainError

    for week in weeks:
        try:
            parse_iso_week(week)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--week") from None
    database = _database(_settings())
    try:
        with database.session(org_id) as session:
            accounts.get_organisation(session, org_id)
            synced = activity.sync_product_events(session)
        with database.session(org_id) as session:
            result = report_domain.build(session, list(weeks) or None)
    except DomainError as error:
        raise click.ClickException(error.detail) from None
    click.echo(f"{synced.accepted} new events from digests, pulse answers and enrolments")
    click.echo(f"{len(result.weeks)} weeks, {result.periods} periods, {result.cells} cells rebuilt")


@reports.command("rotate-key")
@click.option("--org", "org_id", required=True, type=int, help="Organisation id.")
def reports_rotate_key(org_id: int) -> None:
    """Replace the organisation's analytics (pseudonym) key: current employees' activity is
    re-pseudonymised, the old key destroyed; former employees' events become unlinkable."""
    from shared.domain import accounts, activity
    from shared.errors import DomainError

    database = _database(_settings())
    try:
        with database.session(org_id) as session:
            accounts.get_organisation(session, org_id)
            version = activity.rotate_key(session)
    except DomainError as error:
        raise click.ClickException(error.detail) from None
    click.echo(f"analytics key of organisation {org_id} is now version {version}; the old key is destroyed")


if __name__ == "__main__":
    main()
