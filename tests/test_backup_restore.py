"""The runbook's backup and restore commands, run for real: a database with an
organisation and an employee is backed up and restored into an empty one, which then
holds the same data at the same migration (``wellbeing db upgrade`` has nothing to do).
PostgreSQL: pg_dump / pg_restore (PostgreSQL pass); SQLite: sqlite3 ``.backup``."""
from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from shared.db import Database
from shared.domain import accounts
from shared.migrate import upgrade
from tests.conftest import ADMIN_PASSWORD, PG_ADMIN_URL, TEST_DB
from tests.digest_support import add_employees


def _fill(url: str) -> None:
    upgrade(url)
    database = Database(url)
    with database.session(unscoped=True) as session:
        org_id = accounts.create_organisation(session, "Backup Ltd", "hr@backup.example", ADMIN_PASSWORD).id
    add_employees(database, org_id, 3, prefix="b")
    database.dispose()


def _contents(url: str) -> tuple:
    engine = create_engine(url)
    with engine.connect() as connection:
        found = (
            connection.execute(text("SELECT name FROM organisations")).scalars().all(),
            connection.execute(text("SELECT email FROM employees ORDER BY email")).scalars().all(),
            connection.execute(text("SELECT version_num FROM alembic_version ORDER BY 1")).scalars().all(),
        )
    engine.dispose()
    return found


def _libpq(url: str) -> str:
    """The SQLAlchemy URL as pg_dump and pg_restore take it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.mark.skipif(TEST_DB != "postgresql", reason="pg_dump/pg_restore: PostgreSQL pass")
def test_pg_dump_and_pg_restore(tmp_path: Path):
    if not (shutil.which("pg_dump") and shutil.which("pg_restore")):
        pytest.fail("pg_dump/pg_restore not installed (Debian: postgresql-client)")
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    names = [f"wellbeing_backup_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    source, target = (PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}" for name in names)
    try:
        with admin.connect() as connection:
            for name in names:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
        _fill(source)
        dump = tmp_path / "wellbeing.dump"
        subprocess.run(["pg_dump", "--format=custom", f"--file={dump}", _libpq(source)], check=True)
        subprocess.run(["pg_restore", "--clean", "--if-exists", "--no-owner", "--exit-on-error", f"--dbname={_libpq(target)}", str(dump)],
                       check=True)
        assert _contents(target) == _contents(source)
        assert _contents(target)[0] == ["Backup Ltd"] and len(_contents(target)[1]) == 3
        upgrade(target)  # nothing to apply
        assert _contents(target) == _contents(source)
    finally:
        with admin.connect() as connection:
            for name in names:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_sqlite_online_backup(tmp_path: Path):
    if not shutil.which("sqlite3"):
        pytest.skip("the sqlite3 command-line shell is not installed (Debian: sqlite3)")
    source, backup = tmp_path / "wellbeing.db", tmp_path / "backup.db"
    _fill(f"sqlite:///{source}")
    subprocess.run(["sqlite3", str(source), f".backup '{backup}'"], check=True)
    assert _contents(f"sqlite:///{backup}") == _contents(f"sqlite:///{source}")
    assert _contents(f"sqlite:///{backup}")[0] == ["Backup Ltd"]
