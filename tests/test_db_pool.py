"""Pooled PostgreSQL connections that died while idle are replaced, not handed out."""
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from shared.db import make_engine


@pytest.fixture
def pg_url(database_url):  # noqa: ANN001
    if not database_url.startswith("postgresql"):
        pytest.skip("connection liveness is a PostgreSQL matter")
    return database_url


def _backend_pid(engine) -> int:  # noqa: ANN001
    with engine.connect() as connection:
        return connection.execute(text("SELECT pg_backend_pid()")).scalar_one()


def _terminate(database_url: str, pid: int) -> None:
    killer = make_engine(database_url)
    try:
        with killer.connect() as connection:
            assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
    finally:
        killer.dispose()


def test_connection_killed_while_idle_is_replaced_on_checkout(pg_url):
    engine = make_engine(pg_url, idle_ping_seconds=0)
    try:
        pid = _backend_pid(engine)
        _terminate(pg_url, pid)
        assert _backend_pid(engine) != pid  # no error: the dead connection was tested and replaced
    finally:
        engine.dispose()


def test_recently_used_connection_is_not_pinged(pg_url):
    # Within the idle window the pool trusts the connection: a connection killed in
    # that window fails once, and the pool is then invalidated and reconnects.
    engine = make_engine(pg_url, idle_ping_seconds=3600)
    try:
        pid = _backend_pid(engine)
        _terminate(pg_url, pid)
        with pytest.raises(OperationalError):
            _backend_pid(engine)
        assert _backend_pid(engine) != pid
    finally:
        engine.dispose()
