"""What the benchmarks share: free loopback ports, a scratch database per run, and an
organisation with an HR admin's bearer token."""
from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time the processes have used so far (Linux /proc); a process
    that has gone counts nothing. Unlike rates, CPU per unit of work hardly moves with
    what else the machine runs."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def prepare_database(admin_url: str | None, workdir: Path) -> tuple[str, Callable[[], None]]:
    """A fresh, migrated database's URL and a function that drops it: a new PostgreSQL
    database from ``admin_url``, or a SQLite file in ``workdir`` when no URL is given."""
    from shared.migrate import upgrade

    if not admin_url:
        url = f"sqlite:///{workdir / 'bench.db'}"
        upgrade(url)
        return url, lambda: None
    from sqlalchemy import create_engine, text

    name = f"wellbeing_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url)
    except BaseException:
        drop()
        raise
    return url, drop


def create_org_with_token(database_url: str, name: str, admin_email: str) -> tuple[int, str]:
    """A new organisation in a migrated database, and a bearer token of its HR admin."""
    from datetime import timedelta

    from shared.db import Database
    from shared.domain import accounts
    from shared.models import User

    db = Database(database_url)
    try:
        with db.session(unscoped=True) as session:
            org = accounts.create_organisation(session, name, admin_email, "bench-password-123")
            admin = session.scalar(accounts.users_query().where(User.org_id == org.id))
            return org.id, accounts.issue_token(session, admin, timedelta(hours=2)).token
    finally:
        db.dispose()
