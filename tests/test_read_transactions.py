"""Sessions that begin their transaction at their first write (``Database.open(...,
begin_at_first_write=True)``, the session of every GET request): reads run outside a
transaction, and everything from the first write on is one transaction that commits or
rolls back as a whole. On SQLite every session works that way already (pysqlite)."""
from datetime import timedelta

import pytest
from flask import g
from sqlalchemy import select, text, update

from shared.db import plan_with_values, utcnow
from shared.models import ApiToken, User
from shared.security import token_digest


@pytest.fixture
def pg(database_url):  # noqa: ANN001
    if not database_url.startswith("postgresql"):
        pytest.skip("pysqlite begins transactions at the first write by itself")


def _status(session) -> str:  # noqa: ANN001
    return session.connection().connection.driver_connection.info.transaction_status.name


def _admin(session, tenant) -> User:  # noqa: ANN001
    return session.get(User, tenant.admin_id)


def test_reads_run_outside_a_transaction_until_the_first_write(pg, db, tenant):
    session = db.open(tenant.org_id, begin_at_first_write=True)
    try:
        admin = _admin(session, tenant)
        session.scalars(select(User)).all()
        assert _status(session) == "IDLE"  # no BEGIN was sent for the reads
        admin.full_name = "Renamed"
        session.flush()
        assert _status(session) == "INTRANS"
        session.execute(update(User).where(User.id == tenant.admin_id).values(is_active=False))
        session.rollback()  # both writes go together
    finally:
        session.close()
    with db.session(tenant.org_id) as session:
        admin = _admin(session, tenant)
        assert (admin.full_name, admin.is_active) == ("", True)


def test_a_locking_read_begins_the_transaction_and_holds_its_lock(pg, db, tenant):
    session = db.open(tenant.org_id, begin_at_first_write=True)
    try:
        session.execute(select(User.id).where(User.id == tenant.admin_id).with_for_update()).all()
        assert _status(session) == "INTRANS"
        with db.engine.connect() as other:
            locked = other.execute(text("SELECT id FROM users WHERE id = :id FOR UPDATE SKIP LOCKED"), {"id": tenant.admin_id})
            assert locked.all() == []
    finally:
        session.close()


def test_set_local_savepoints_and_server_side_cursors_get_a_transaction(pg, db, tenant):
    session = db.open(tenant.org_id, begin_at_first_write=True)
    try:
        plan_with_values(session)
        assert session.scalar(text("SHOW plan_cache_mode")) == "force_custom_plan"
    finally:
        session.close()
    session = db.open(tenant.org_id, begin_at_first_write=True)
    try:
        with session.begin_nested():
            _admin(session, tenant).full_name = "In a savepoint"
        assert [u.id for u in session.scalars(select(User).execution_options(yield_per=10))] == [tenant.admin_id]
        session.commit()
    finally:
        session.close()
    with db.session(tenant.org_id) as session:
        assert _admin(session, tenant).full_name == "In a savepoint"


def test_pooled_connections_go_back_to_transactions(pg, db, tenant):
    session = db.open(tenant.org_id, begin_at_first_write=True)
    driver_connection = session.connection().connection.driver_connection
    session.scalars(select(User)).all()
    session.close()
    with db.session(tenant.org_id) as session:
        assert session.connection().connection.driver_connection is driver_connection  # the same pooled connection
        session.scalars(select(User)).all()
        assert _status(session) == "INTRANS"


def test_get_requests_read_without_a_transaction(pg, app, client, tenant):
    seen = []

    @app.after_request
    def _record(response):  # noqa: ANN001, ANN202
        seen.append(_status(g.db_session))
        return response

    assert client.get("/api/v1/users", headers=tenant.headers).status_code == 200  # token recorded: a write
    assert client.get("/api/v1/users", headers=tenant.headers).status_code == 200  # within the minute: reads only
    assert client.patch(f"/api/v1/users/{tenant.admin_id}", json={"full_name": "A"}, headers=tenant.headers).status_code == 200
    assert seen == ["INTRANS", "IDLE", "INTRANS"]


def test_a_failed_get_rolls_back_what_it_wrote(client, tenant, db):
    """The token's last use is written by GET requests; a request that fails undoes it
    with everything else it wrote (both backends)."""
    stale = utcnow() - timedelta(minutes=5)

    def last_used():
        with db.session(tenant.org_id) as session:
            return session.scalar(select(ApiToken.last_used_at).where(ApiToken.token_hash == token_digest(tenant.token)))

    with db.session(tenant.org_id) as session:
        session.execute(update(ApiToken).values(last_used_at=stale))
    assert client.get("/api/v1/users/999999", headers=tenant.headers).status_code == 404
    assert last_used() == stale
    assert client.get("/api/v1/users/999999", headers=tenant.headers).status_code == 404
    assert last_used() == stale
    assert client.get(f"/api/v1/users/{tenant.admin_id}", headers=tenant.headers).status_code == 200
    assert last_used() > stale
