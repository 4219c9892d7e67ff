"""The tenant guard: one mechanism scopes every ORM query and insert to one organisation."""
import pytest
from sqlalchemy import select, update

from shared.db import TenantScopeError
from shared.models import AuditEvent, Organisation, Role, User


def test_queries_see_only_their_organisation(db, tenant, other_tenant):
    with db.session(tenant.org_id) as session:
        assert [u.email for u in session.scalars(select(User))] == [tenant.admin_email]
        assert [o.id for o in session.scalars(select(Organisation))] == [tenant.org_id]
        assert session.get(User, other_tenant.admin_id) is None


def test_joins_and_subqueries_are_scoped_too(db, tenant, other_tenant):
    with db.session(tenant.org_id) as session:
        rows = session.execute(select(User.email, Organisation.name).join(Organisation, User.org_id == Organisation.id)).all()
        assert rows == [(tenant.admin_email, "Acme Ltd")]
        inner = select(User.id).scalar_subquery()
        assert session.scalars(select(AuditEvent.org_id).where(AuditEvent.target_id.in_(select(User.id)))).all() is not None
        assert session.scalar(select(User.email).where(User.id == inner)) == tenant.admin_email


def test_bulk_update_cannot_reach_another_tenant(db, tenant, other_tenant):
    with db.session(tenant.org_id) as session:
        session.execute(update(User).values(full_name="Renamed"))
    with db.session(other_tenant.org_id) as session:
        assert session.scalar(select(User.full_name)) == ""


def test_session_without_tenant_refuses_tenant_data(db, tenant):
    with pytest.raises(TenantScopeError):
        with db.session() as session:
            session.scalars(select(User)).all()


def test_new_rows_are_stamped_and_cannot_be_planted_elsewhere(db, tenant, other_tenant):
    with db.session(tenant.org_id) as session:
        user = User(email="new@example.com", role=Role.MANAGER)
        session.add(user)
        session.flush()
        assert user.org_id == tenant.org_id
    with pytest.raises(TenantScopeError):
        with db.session(tenant.org_id) as session:
            session.add(User(email="planted@example.com", role=Role.MANAGER, org_id=other_tenant.org_id))
            session.flush()


def test_unscoped_sessions_are_explicit(db, tenant, other_tenant):
    with db.session(unscoped=True) as session:
        assert session.scalar(select(User).where(User.id == other_tenant.admin_id)).org_id == other_tenant.org_id
