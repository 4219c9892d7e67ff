"""What the benchmarks share: free loopback ports and a scratch database per run."""
from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_database(admin_url: str | None, workdir: Path) -> tuple[str, Callable[[], None]]:
    """A fresh database URL and a function that drops it: a new PostgreSQL database
    from ``admin_url``, or a SQLite file in ``workdir`` when no URL is given."""
    if not admin_url:
        return f"sqlite:///{workdir / 'bench.db'}", lambda: None
    from sqlalchemy import create_engine, text

    name = f"wellbeing_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return admin_url.rsplit("/", 1)[0] + f"/{name}", drop
