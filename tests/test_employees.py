"""Employees through the API: CRUD, uniqueness, manager cycles, consents, offboarding,
tenant isolation and formula-safe CSV export."""
from __future__ import annotations

import csv
import io

from shared.models import Role

API = "/api/v1"


def employee(n: int, **overrides) -> dict:
    body = {
        "external_id": f"E{n}",
        "email": f"person{n}@example.com",
        "first_name": f"First{n}",
        "last_name": f"Last{n}",
        "department": "Engineering",
        "team": "Core",
        "timezone": "Europe/London",
    }
    body.update(overrides)
    return body


def create(client, tenant, n: int, **overrides) -> dict:  # noqa: ANN001
    response = client.post(f"{API}/employees", json=employee(n, **overrides), headers=tenant.headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_create_read_update_list(client, tenant):
    created = create(client, tenant, 1, email="Mixed.Case@Example.COM")
    assert created["id"] and created["email"] == "mixed.case@example.com"
    assert created["status"] == "active" and created["digest_weekday"] == 0 and created["digest_hour"] == 9
    got = client.get(f"{API}/employees/{created['id']}", headers=tenant.headers).get_json()
    assert got["external_id"] == "E1"
    patched = client.patch(f"{API}/employees/{created['id']}", json={"team": "Platform", "digest_weekday": 3, "digest_topics": ["sleep"]},
                           headers=tenant.headers)
    assert patched.status_code == 200
    assert patched.get_json()["team"] == "Platform" and patched.get_json()["digest_topics"] == ["sleep"]
    create(client, tenant, 2, department="Sales")
    listing = client.get(f"{API}/employees?department=Sales", headers=tenant.headers).get_json()
    assert [e["external_id"] for e in listing["items"]] == ["E2"]
    search = client.get(f"{API}/employees?q=first1", headers=tenant.headers).get_json()
    assert [e["external_id"] for e in search["items"]] == ["E1"]


def test_email_unique_case_insensitive_and_external_id_unique(client, tenant, other_tenant):
    create(client, tenant, 1)
    dup = client.post(f"{API}/employees", json=employee(2, email="PERSON1@example.com"), headers=tenant.headers)
    assert dup.status_code == 409
    assert dup.get_json()["errors"][0]["field"] == "email"
    dup_ext = client.post(f"{API}/employees", json=employee(3, external_id="E1"), headers=tenant.headers)
    assert dup_ext.status_code == 409
    # Another organisation may have the same person.
    assert client.post(f"{API}/employees", json=employee(1), headers=other_tenant.headers).status_code == 201


def test_timezone_validated(client, tenant):
    response = client.post(f"{API}/employees", json=employee(1, timezone="Mars/Olympus"), headers=tenant.headers)
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert any(e["field"] == "timezone" for e in response.get_json()["errors"])


def test_manager_cycle_rejected(client, tenant):
    a = create(client, tenant, 1)
    b = create(client, tenant, 2, manager_external_id="E1")
    c = create(client, tenant, 3, manager_external_id="E2")
    assert c["manager_id"] == b["id"]
    response = client.patch(f"{API}/employees/{a['id']}", json={"manager_external_id": "E3"}, headers=tenant.headers)
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["field"] == "manager_external_id"
    self_loop = client.patch(f"{API}/employees/{a['id']}", json={"manager_external_id": "E1"}, headers=tenant.headers)
    assert self_loop.status_code == 422
    unknown = client.patch(f"{API}/employees/{a['id']}", json={"manager_external_id": "nobody"}, headers=tenant.headers)
    assert unknown.status_code == 422
    assert client.get(f"{API}/employees/{a['id']}", headers=tenant.headers).get_json()["manager_id"] is None


def test_consents_recorded_with_who_when_how(client, tenant):
    e = create(client, tenant, 1)
    response = client.post(f"{API}/employees/{e['id']}/consents", json={"kind": "activity_analytics", "granted": True}, headers=tenant.headers)
    assert response.status_code == 201
    client.patch(f"{API}/employees/{e['id']}", json={"digest_consent": False}, headers=tenant.headers)
    history = client.get(f"{API}/employees/{e['id']}/consents", headers=tenant.headers).get_json()["items"]
    assert [(c["kind"], c["granted"], c["source"]) for c in history] == [
        ("digest_emails", False, "admin"),
        ("activity_analytics", True, "admin"),
    ]
    assert all(c["actor_user_id"] == tenant.admin_id and c["at"] for c in history)
    current = client.get(f"{API}/employees/{e['id']}", headers=tenant.headers).get_json()
    assert current["digest_consent"] is False and current["analytics_consent"] is True


def test_offboarding_stops_mail_at_once(client, tenant, db):
    from shared.domain import employees as domain

    e = create(client, tenant, 1)
    create(client, tenant, 2)
    with db.session(tenant.org_id) as session:
        assert {x.external_id for x in session.scalars(domain.digest_recipients_query())} == {"E1", "E2"}
    left = client.patch(f"{API}/employees/{e['id']}", json={"status": "left"}, headers=tenant.headers).get_json()
    assert left["status"] == "left" and left["left_at"]
    with db.session(tenant.org_id) as session:
        assert {x.external_id for x in session.scalars(domain.digest_recipients_query())} == {"E2"}
    history = client.get(f"{API}/employees/{e['id']}/export", headers=tenant.headers).get_json()
    assert history["employee"]["status"] == "left"


def test_paused_employee_is_not_a_recipient(client, tenant, db):
    from datetime import date, timedelta

    from shared.domain import employees as domain

    e = create(client, tenant, 1)
    until = (date.today() + timedelta(days=30)).isoformat()
    client.patch(f"{API}/employees/{e['id']}", json={"paused_until": until}, headers=tenant.headers)
    with db.session(tenant.org_id) as session:
        assert list(session.scalars(domain.digest_recipients_query())) == []


def test_tenant_isolation_and_roles(client, tenant, other_tenant, make_user):
    mine = create(client, tenant, 1)
    theirs = create(client, other_tenant, 1)
    for path in (f"/employees/{theirs['id']}", f"/employees/{theirs['id']}/consents", f"/employees/{theirs['id']}/export",
                 f"/employees/{theirs['id']}/preference-link"):
        assert client.get(API + path, headers=tenant.headers).status_code == 404, path
    assert client.patch(f"{API}/employees/{theirs['id']}", json={"team": "x"}, headers=tenant.headers).status_code == 404
    assert client.delete(f"{API}/employees/{theirs['id']}", headers=tenant.headers).status_code == 404
    assert client.post(f"{API}/employees/{theirs['id']}/consents", json={}, headers=tenant.headers).status_code == 404
    listing = client.get(f"{API}/employees", headers=tenant.headers).get_json()
    assert [e["id"] for e in listing["items"]] == [mine["id"]]
    manager = make_user(tenant, Role.MANAGER)
    assert client.get(f"{API}/employees", headers=manager.headers).status_code == 403
    assert client.get(f"{API}/employees/{mine['id']}", headers=manager.headers).status_code == 403
    assert client.get(f"{API}/employees/export.csv", headers=manager.headers).status_code == 403


def test_export_csv_is_formula_safe(client, tenant):
    create(client, tenant, 1, first_name="=HYPERLINK(\"http://evil\")", last_name="+SUM(A1)", department="-2+3", team="@cmd")
    create(client, tenant, 2, first_name="\tTabbed", last_name="\rCarriage")
    create(client, tenant, 3, first_name="Plain", last_name="O'Neil")
    response = client.get(f"{API}/employees/export.csv", headers=tenant.headers)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    by_ext = {r["external_id"]: r for r in rows}
    assert by_ext["E1"]["first_name"] == "'=HYPERLINK(\"http://evil\")"
    assert by_ext["E1"]["last_name"] == "'+SUM(A1)"
    assert by_ext["E1"]["department"] == "'-2+3"
    assert by_ext["E1"]["team"] == "'@cmd"
    assert by_ext["E2"]["first_name"] == "'\tTabbed"
    assert by_ext["E2"]["last_name"] == "'\rCarriage"
    assert by_ext["E3"]["first_name"] == "Plain" and by_ext["E3"]["last_name"] == "O'Neil"
    assert list(rows[0].keys())[:8] == ["external_id", "email", "first_name", "last_name", "department", "team", "manager_external_id", "timezone"]
