"""Engine, sessions and the tenant guard: the one way to get a database session.

Views, Celery tasks and CLI commands all open sessions with :meth:`Database.session`.
A session is bound to one organisation (``org_id``); every ORM query it runs on a
tenant-owned model gets ``org_id = :org`` added by the ``do_orm_execute`` hook below,
and every row it inserts is stamped with (or checked against) that organisation.
Code that forgets the tenant cannot leak another one's rows: a session without a
tenant refuses to touch tenant-owned models unless it was opened explicitly as
``unscoped`` (platform operations: authentication look-ups, org creation, schedulers
that fan out per organisation).
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import lru_cache
from weakref import WeakKeyDictionary

import psycopg
from sqlalchemy import DateTime, ForeignKey, Integer, MetaData, TypeDecorator, create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import (
    DeclarativeBase,
    LoaderCriteriaOption,
    Mapped,
    ORMExecuteState,
    Session,
    declared_attr,
    mapped_column,
    sessionmaker,
    with_loader_criteria,
)
from sqlalchemy.pool import NullPool
from sqlalchemy.sql import Executable

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):  # noqa: ANN001
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("naive datetime given; use shared.db.utcnow() or an aware datetime")
            value = value.astimezone(timezone.utc)
        return value

    def process_result_value(self, value, dialect):  # noqa: ANN001
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


class TenantOwned:
    """Mixin for every record that belongs to exactly one organisation."""

    @declared_attr
    def org_id(cls) -> Mapped[int]:  # noqa: N805
        return mapped_column(Integer, ForeignKey("organisations.id", ondelete="CASCADE"), index=True, nullable=False)


class TenantScopeError(RuntimeError):
    """A tenant-owned model was touched by a session that is bound to no organisation."""


@event.listens_for(Session, "do_orm_execute")
def _scope_queries_to_tenant(state: ORMExecuteState) -> None:
    if not (state.is_select or state.is_update or state.is_delete):
        return
    if state.is_column_load or state.is_relationship_load:
        # Lazy loads start from rows this session already scoped.
        return
    info = state.session.info
    if info.get("unscoped"):
        return
    org_id = info.get("org_id")
    if org_id is None:
        # Only here are the statement's mappers needed: working them out costs more
        # than adding the criteria, which are harmless on statements they do not match.
        if any(issubclass(m.class_, TenantOwned) for m in state.all_mappers):
            raise TenantScopeError("query on tenant-owned data from a session bound to no organisation")
        return
    state.statement = _scoped(state.statement, org_id)


# statement -> {organisation: the statement with that organisation's criteria}, for as
# long as the statement lives.
_SCOPED: WeakKeyDictionary[Executable, dict[int, Executable]] = WeakKeyDictionary()
# Organisations kept per statement (the set starts afresh when full): bounds the memory a
# prebuilt statement holds on a platform with many tenants.
SCOPED_ORGANISATIONS_PER_STATEMENT = 64


def _scoped(statement: Executable, org_id: int) -> Executable:
    """``statement`` with the tenant criteria of ``org_id``, made once per statement object
    and organisation. Adding the criteria makes a new statement whose SQLAlchemy cache key
    is computed again on execution; for a statement that is built once and executed on
    every request (``shared.pagination.list_query``, module-level statements), the copy
    and its key are then reused. A statement built for one request is dropped with it."""
    by_org = _SCOPED.get(statement)
    if by_org is None:
        by_org = _SCOPED[statement] = {}
    scoped = by_org.get(org_id)
    if scoped is None:
        if len(by_org) >= SCOPED_ORGANISATIONS_PER_STATEMENT:
            by_org.clear()
        scoped = by_org[org_id] = statement.options(*_tenant_criteria(org_id))
    return scoped


@lru_cache(maxsize=4096)
def _tenant_criteria(org_id: int) -> tuple[LoaderCriteriaOption, ...]:
    """The tenant guard's options for one organisation. Built once per organisation
    rather than once per query: building them is a large part of a simple query's cost."""
    from shared.models.tenancy import Organisation  # models import this module

    return (
        with_loader_criteria(TenantOwned, lambda cls: cls.org_id == org_id, include_aliases=True),
        with_loader_criteria(Organisation, lambda cls: cls.id == org_id, include_aliases=True),
    )


@event.listens_for(Session, "before_flush")
def _stamp_new_rows_with_tenant(session: Session, flush_context, instances) -> None:  # noqa: ANN001
    org_id = session.info.get("org_id")
    for obj in session.new:
        if not isinstance(obj, TenantOwned):
            continue
        if obj.org_id is None:
            if org_id is None:
                raise TenantScopeError(f"new {type(obj).__name__} has no organisation")
            obj.org_id = org_id
        elif org_id is not None and obj.org_id != org_id:
            raise TenantScopeError(f"new {type(obj).__name__} belongs to another organisation")
    if org_id is None:
        return
    for obj in session.dirty:
        if isinstance(obj, TenantOwned) and obj.org_id != org_id:
            raise TenantScopeError(f"{type(obj).__name__} moved to another organisation")


@contextmanager
def across_tenants(session: Session) -> Iterator[Session]:
    """Lift the tenant guard for one look-up that must see every organisation
    (platform-wide uniqueness). Rows it loads stay in the session: read counts, not rows."""
    previous = session.info.get("unscoped", False)
    session.info["unscoped"] = True
    try:
        yield session
    finally:
        session.info["unscoped"] = previous


def plan_with_values(session: Session) -> None:
    """Have PostgreSQL plan the rest of this transaction's statements with their values.
    psycopg prepares a statement after a few executions on a connection, and PostgreSQL
    then switches to a generic plan, made without the values, when its estimate looks no
    worse: for statements whose best plan depends on the values (how common a search
    term is; a long IN list, which with values becomes one hashed look-up per row and
    without them a comparison with each), that plan can be many times slower."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


# A pooled PostgreSQL connection unused for this long is tested before it is handed out.
IDLE_PING_SECONDS = 5.0


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001
    cursor = dbapi_connection.cursor()
    # WAL lets the API, worker and beat read while one of them writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL syncs at checkpoints, not at every commit: a commit survives a
    # crash of the process, but a power loss or OS crash can roll back the last few.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str, *, idle_ping_seconds: float = IDLE_PING_SECONDS) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            from pathlib import Path

            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # In-memory databases live and die with one connection; files get a pool.
        engine = create_engine(url, poolclass=NullPool) if parsed.database in (None, "", ":memory:") else create_engine(url, pool_size=10, max_overflow=10)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(url, pool_size=5, max_overflow=10)
    _ping_connections_after_idle(engine, idle_ping_seconds)
    return engine


def _ping_connections_after_idle(engine: Engine, idle_seconds: float) -> None:
    """Test a pooled connection on checkout only when it sat unused for ``idle_seconds``:
    a server restart or an idle timeout on the way kills idle connections, and those
    are replaced here without the caller noticing. ``pool_pre_ping`` would spend a round
    trip on every checkout, i.e. on every API request, for connections that answered a
    moment ago. A connection that dies within the window fails its request once, and
    SQLAlchemy then invalidates the whole pool, so the next checkouts reconnect."""

    @event.listens_for(engine, "checkin")
    def _remember_last_use(_dbapi_connection, record) -> None:  # noqa: ANN001
        record.info["last_used"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection, record, _proxy) -> None:  # noqa: ANN001
        if time.monotonic() - record.info.get("last_used", 0.0) < idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool discards this connection and checks out another (or a new one).
            raise DisconnectionError() from exc


# Reads outside a transaction (PostgreSQL). Under READ COMMITTED, PostgreSQL's default and
# the product's, each statement of a transaction takes its own snapshot, so a plain SELECT
# sees the same rows inside or outside one; what a transaction adds to a read is its locks
# (FOR UPDATE, FOR SHARE) and its settings (SET LOCAL). A session that mostly reads can
# therefore run its reads in autocommit mode and begin its transaction just before its
# first other statement: a read-only session saves the BEGIN and COMMIT round trips, and
# the writes of any session stay atomic. pysqlite already works that way (it begins a
# transaction only before the first INSERT, UPDATE or DELETE).
#
# It is done in the driver, by the cursors psycopg hands out for such a session, so that
# every statement is seen, whichever way it is sent (ORM, Core, flush, SAVEPOINT, driver
# SQL, COPY); SQLAlchemy's AUTOCOMMIT isolation level or its events would cost more per
# request than the two round trips.
_LOCKING_OR_INTO = re.compile(r" (?:FOR (?:UPDATE|NO KEY UPDATE|SHARE|KEY SHARE)|INTO)\b")


def _is_plain_read(query: object) -> bool:
    """A SELECT that neither locks rows nor creates a table. Anything else, including a
    WITH (it may hold an INSERT), counts as a write. A SELECT of a function that writes
    or locks (nextval, pg_advisory_xact_lock, set_config) would pass for a read: the
    product runs none in a session that reads first."""
    return isinstance(query, str) and query.startswith("SELECT") and _LOCKING_OR_INTO.search(query) is None


def _begin(connection: psycopg.Connection) -> None:
    # Once off, psycopg sends BEGIN ahead of the next statement; the session's commit
    # or rollback ends the transaction. (The mode cannot be changed inside one.)
    if connection.autocommit:
        connection.autocommit = False


class _BeginAtFirstWriteCursor(psycopg.Cursor):
    """Runs plain reads as they come; begins the transaction before anything else."""

    __slots__ = ()

    def execute(self, query, params=None, **kwargs):  # noqa: ANN001, ANN003, ANN201
        if self._conn.autocommit and not _is_plain_read(query):
            _begin(self._conn)
        return super().execute(query, params, **kwargs)

    def executemany(self, query, params_seq, **kwargs):  # noqa: ANN001, ANN003, ANN201
        _begin(self._conn)
        return super().executemany(query, params_seq, **kwargs)

    def copy(self, statement, params=None, **kwargs):  # noqa: ANN001, ANN003, ANN201
        _begin(self._conn)
        return super().copy(statement, params, **kwargs)


class _BeginningServerCursor(psycopg.ServerCursor):
    """A server-side cursor (``yield_per``) lives in a transaction."""

    __slots__ = ()

    def execute(self, query, params=None, **kwargs):  # noqa: ANN001, ANN003, ANN201
        _begin(self._conn)
        return super().execute(query, params, **kwargs)


def _read_outside_a_transaction(session: Session) -> None:
    """Put ``session``'s connection into that mode for as long as it has it checked out."""
    driver_connection = session.connection().connection.driver_connection
    driver_connection.autocommit = True
    driver_connection.cursor_factory = _BeginAtFirstWriteCursor
    driver_connection.server_cursor_factory = _BeginningServerCursor


def _back_to_transactions_on_checkin(engine: Engine) -> None:
    @event.listens_for(engine, "checkin")
    def _restore(dbapi_connection, _record) -> None:  # noqa: ANN001
        # The pool has already rolled back whatever was left open. A closed connection
        # can only fail its next use, after which the pool replaces it.
        if dbapi_connection is not None and not dbapi_connection.closed and dbapi_connection.cursor_factory is _BeginAtFirstWriteCursor:
            dbapi_connection.autocommit = False
            dbapi_connection.cursor_factory = psycopg.Cursor
            dbapi_connection.server_cursor_factory = psycopg.ServerCursor


class Database:
    """Owns the engine; hands out sessions bound to one organisation (or none)."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)
        if not self.is_sqlite:
            _back_to_transactions_on_checkin(self.engine)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def open(self, org_id: int | None = None, *, unscoped: bool = False, begin_at_first_write: bool = False) -> Session:
        """A session for the caller to commit and close. ``begin_at_first_write``: its
        reads run outside a transaction until its first write (see ``_is_plain_read``), for
        units of work that mostly read, such as the API's GET requests; on SQLite every
        session works that way."""
        session = self._factory()
        session.info["org_id"] = org_id
        session.info["unscoped"] = unscoped
        if begin_at_first_write and not self.is_sqlite:
            _read_outside_a_transaction(session)
        return session

    @contextmanager
    def session(self, org_id: int | None = None, *, unscoped: bool = False) -> Iterator[Session]:
        """A unit of work: commits when the block ends, rolls back if it raises."""
        session = self.open(org_id, unscoped=unscoped)
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()
