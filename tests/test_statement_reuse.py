"""List statements are built once per combination of filters and reused by every request;
the tenant guard's scoped copies of them are kept per organisation and must never serve
another organisation."""
from shared import db as db_module
from shared.domain import accounts
from shared.models import Role
from shared.pagination import paginate


def test_list_queries_are_built_once_per_filter_combination():
    assert accounts.users_query() is accounts.users_query()
    assert accounts.users_query(role=Role.MANAGER) is accounts.users_query(role=Role.MANAGER)
    assert accounts.users_query(role=Role.MANAGER) is not accounts.users_query()
    assert accounts.users_query(q="ann") is not accounts.users_query(q="bob")


def _emails(db, org_id, stmt):  # noqa: ANN001
    with db.session(org_id) as session:
        return [u.email for u in paginate(session, stmt, 1, 50).items]


def test_a_reused_statement_is_scoped_to_each_organisation(db, make_tenant, make_user, monkeypatch):
    tenants = [make_tenant() for _ in range(3)]
    for tenant in tenants:
        make_user(tenant, Role.MANAGER)
    stmt = accounts.users_query()
    expected = {t.org_id: _emails(db, t.org_id, stmt) for t in tenants}
    assert all(len(emails) == 2 for emails in expected.values())
    assert len({e for emails in expected.values() for e in emails}) == 6
    # The scoped copies are reused, and rebuilt when the per-statement set starts afresh.
    monkeypatch.setattr(db_module, "SCOPED_ORGANISATIONS_PER_STATEMENT", 2)
    for _ in range(2):
        for tenant in tenants:
            assert _emails(db, tenant.org_id, stmt) == expected[tenant.org_id]
