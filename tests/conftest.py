"""Shared fixtures: a real database (SQLite or PostgreSQL, by WELLBEING_TEST_DB),
migrated once per run with Alembic and emptied after every test; a real SMTP server
on loopback; a real Celery worker on the real broker (Redis in the PostgreSQL pass)."""
from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import create_engine, text

from shared.config import Settings, load_settings
from shared.db import Database
from shared.domain import accounts
from shared.models import Base, Role

TEST_DB = os.environ.get("WELLBEING_TEST_DB", "sqlite")
PG_ADMIN_URL = os.environ.get("WELLBEING_TEST_PG_URL")
REDIS_URL = os.environ.get("WELLBEING_TEST_REDIS_URL")
ADMIN_PASSWORD = "correct-horse-battery"


def pytest_report_header(config):  # noqa: ANN001
    return f"wellbeing: database={TEST_DB} broker={'redis' if TEST_DB == 'postgresql' and REDIS_URL else 'memory'}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> Iterator[str]:  # noqa: ANN001
    from shared.migrate import upgrade

    if TEST_DB == "postgresql":
        if not PG_ADMIN_URL:
            pytest.exit("WELLBEING_TEST_DB=postgresql needs WELLBEING_TEST_PG_URL (ops/test sets it)", returncode=2)
        name = f"wellbeing_test_{uuid.uuid4().hex[:10]}"
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        upgrade(url)
        yield url
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'wellbeing.db'}"
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def broker_url() -> str:
    return REDIS_URL if TEST_DB == "postgresql" and REDIS_URL else "memory://"


@dataclass
class SmtpSink:
    """A real SMTP server on loopback collecting what it receives."""

    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    received: threading.Condition = field(default_factory=threading.Condition)

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, N802
        with self.received:
            self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            self.received.notify_all()
        return "250 OK"

    def wait_for(self, count: int, timeout: float = 20) -> list[EmailMessage]:
        with self.received:
            self.received.wait_for(lambda: len(self.messages) >= count, timeout=timeout)
            return list(self.messages)


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink(port=free_port())
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    yield sink
    controller.stop()


def form_token(client, path: str) -> str:  # noqa: ANN001
    """The CSRF token of the form on a console page, as a browser would submit it."""
    import re

    html = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)


def login_console(client, email: str, password: str = ADMIN_PASSWORD):  # noqa: ANN001
    """Sign in through the console's login form, CSRF token included; the response."""
    token = form_token(client, "/console/login")
    return client.post("/console/login", data={"email": email, "password": password, "csrf_token": token})


def make_settings(database_url: str, broker_url: str, smtp_port: int, **overrides: str) -> Settings:
    env = {
        "DATABASE_URL": database_url,
        "BROKER_URL": broker_url,
        "SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
        "MAIL_FROM": "Wellbeing <wellbeing@test.example>",
        "PUBLIC_URL": "http://wellbeing.test",
        "SECRET_KEY": "test-secret-key-0123456789abcdef",
        "WELLBEING_ENV": "testing",
        "LOGIN_RATE_LIMIT": "1000 per minute",
        "RATELIMIT_STORAGE_URL": "memory://",
        "LOG_LEVEL": "WARNING",
    }
    env.update(overrides)
    return load_settings(env)


@pytest.fixture
def settings(database_url, broker_url, smtp_sink) -> Settings:  # noqa: ANN001
    return make_settings(database_url, broker_url, smtp_sink.port)


@pytest.fixture
def db(settings) -> Iterator[Database]:  # noqa: ANN001
    database = Database(settings.database_url)
    yield database
    _empty_all_tables(database)
    database.dispose()


def _empty_all_tables(database: Database) -> None:
    from sqlalchemy import inspect

    existing = set(inspect(database.engine).get_table_names())
    # test_migrations fails on a model without a migration; here, skip it rather than hide every other result.
    tables = [t.name for t in reversed(Base.metadata.sorted_tables) if t.name in existing]
    with database.engine.begin() as connection:
        if database.is_sqlite:
            for name in tables:
                connection.execute(text(f'DELETE FROM "{name}"'))

        else:
            connection.execute(text(f"TRUNCATE {', '.join(chr(34) + t + chr(34) for t in tables)} RESTART IDENTITY CASCADE"))


@pytest.fixture
def app(settings, db):  # noqa: ANN001
    from services.app import create_app
    from services.extensions import limiter

    application = create_app(settings)
    limiter.reset()
    return application


@pytest.fixture
def client(app):  # noqa: ANN001
    return app.test_client()


@dataclass
class Tenant:
    org_id: int
    admin_id: int
    admin_email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_tenant(db):  # noqa: ANN001
    """Create an organisation with an HR admin and a live bearer token."""
    counter = iter(range(1, 1000))

    def _make(name: str | None = None) -> Tenant:
        n = next(counter)
        name = name or f"Org {n} {uuid.uuid4().hex[:6]}"
        email = f"hr{n}-{uuid.uuid4().hex[:6]}@example.com"
        with db.session(unscoped=True) as session:
            org = accounts.create_organisation(session, name, email, ADMIN_PASSWORD)
            admin = session.scalar(accounts.users_query().where(accounts.User.org_id == org.id))
            issued = accounts.issue_token(session, admin, timedelta(hours=1))
            return Tenant(org.id, admin.id, email, issued.token)

    return _make


@pytest.fixture
def tenant(make_tenant) -> Tenant:  # noqa: ANN001
    return make_tenant("Acme Ltd")


@pytest.fixture
def other_tenant(make_tenant) -> Tenant:  # noqa: ANN001
    return make_tenant("Globex plc")


@pytest.fixture
def make_user(db):  # noqa: ANN001
    """Add a console user (with password and token) to an organisation."""

    def _make(tenant: Tenant, role: Role = Role.MANAGER, email: str | None = None) -> Tenant:
        email = email or f"{role.value}-{uuid.uuid4().hex[:8]}@example.com"
        with db.session(tenant.org_id) as session:
            from shared.security import hash_password

            user = accounts.User(email=email, role=role, password_hash=hash_password(ADMIN_PASSWORD))
            session.add(user)
            session.flush()
            issued = accounts.issue_token(session, user, timedelta(hours=1))
            return Tenant(tenant.org_id, user.id, email, issued.token)

    return _make


@pytest.fixture
def celery_worker(settings):  # noqa: ANN001
    """A real Celery worker thread consuming the test broker."""
    from celery.contrib.testing.worker import start_worker

    from workers.celery_app import celery_app, configure

    configure(settings)
    # Tasks queued by earlier tests refer to rows that were wiped since: drop them.
    celery_app.control.purge()
    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10) as worker:
        yield worker


@pytest.fixture
def live_server(app):  # noqa: ANN001
    """The app served over real HTTP on loopback (for Chromium)."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright (never a downloaded browser)."""
    playwright_sync = pytest.importorskip("playwright.sync_api")
    executable = os.environ.get("WELLBEING_CHROMIUM", "/usr/bin/chromium")
    if not os.path.exists(executable):
        pytest.fail(f"Chromium not found at {executable}; ops/test installs Debian's chromium")
    with playwright_sync.sync_playwright() as p:
        instance = p.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        yield instance
        instance.close()


@pytest.fixture
def page(browser):  # noqa: ANN001
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15000)
    yield page
    context.close()


@pytest.fixture
def console_login(page, live_server):  # noqa: ANN001
    """Sign a console user in through the real login form."""

    def _login(email: str, password: str = ADMIN_PASSWORD):
        page.goto(f"{live_server}/console/login")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{live_server}/console/**")
        return page

    return _login


# What tests marked ``prints_counts`` printed (schemathesis requests, fault-injection and
# scale-out counts): pytest captures it, and the issues ask CI to show it.
_PRINTED_COUNTS: list[tuple[str, str]] = []


def pytest_runtest_logreport(report) -> None:  # noqa: ANN001
    if report.when == "call" and "prints_counts" in report.keywords and report.capstdout:
        _PRINTED_COUNTS.append((report.nodeid, report.capstdout))


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001
    if _PRINTED_COUNTS:
        terminalreporter.section("counts printed by tests")
        for nodeid, output in _PRINTED_COUNTS:
            terminalreporter.write_line(nodeid)
            terminalreporter.write(output.lstrip("\n"))
