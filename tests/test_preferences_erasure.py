"""The employee preference centre (signed links, no password) and erasure (GDPR art. 17)."""
from __future__ import annotations

import io
import json
import re
from datetime import date, timedelta

import pytest
from sqlalchemy import JSON, LargeBinary, String, Text, select

from shared.domain import employees as domain
from shared.models import Base, Employee
from shared.security import LinkSigner

API = "/api/v1"
HEADER = "external_id,email,first_name,last_name,department,team,manager_external_id,timezone"


def create(client, tenant, n: int, **overrides) -> dict:  # noqa: ANN001
    body = {"external_id": f"E{n}", "email": f"person{n}@example.com", "first_name": f"First{n}", "last_name": f"Last{n}"}
    body.update(overrides)
    response = client.post(f"{API}/employees", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def link_of(client, tenant, employee_id: int) -> str:  # noqa: ANN001
    data = client.get(f"{API}/employees/{employee_id}/preference-link", headers=tenant.headers).get_json()
    assert data["url"].endswith("/p/" + data["token"])
    return f"/p/{data['token']}"


def csrf(client, path: str) -> str:  # noqa: ANN001
    html = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)


def test_preference_centre_changes_preferences_and_consent(client, tenant, db):
    emp = create(client, tenant, 1)
    path = link_of(client, tenant, emp["id"])
    page = client.get(path)
    assert page.status_code == 200 and "First1" in page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "no-store"
    until = (date.today() + timedelta(days=14)).isoformat()
    form = {"csrf_token": csrf(client, path), "digest_weekday": "4", "digest_hour": "7", "digest_topics": "Sleep, exercise",
            "paused_until": until, "analytics_consent": "y"}  # digest_consent unticked: withdrawn
    response = client.post(path, data=form)
    assert response.status_code == 302
    got = client.get(f"{API}/employees/{emp['id']}", headers=tenant.headers).get_json()
    assert (got["digest_weekday"], got["digest_hour"], got["digest_topics"], got["paused_until"]) == (4, 7, ["sleep", "exercise"], until)
    assert got["digest_consent"] is False and got["analytics_consent"] is True
    consents = client.get(f"{API}/employees/{emp['id']}/consents", headers=tenant.headers).get_json()["items"]
    assert {(c["kind"], c["granted"], c["source"]) for c in consents} == {
        ("digest_emails", False, "employee_link"), ("activity_analytics", True, "employee_link")}
    with db.session(tenant.org_id) as session:
        assert list(session.scalars(domain.digest_recipients_query())) == []


def test_form_without_csrf_token_is_refused(client, tenant):
    emp = create(client, tenant, 1)
    path = link_of(client, tenant, emp["id"])
    assert client.post(path, data={"digest_weekday": "4", "digest_hour": "7"}).status_code == 400


def test_links_cannot_be_forged_or_used_for_another_employee(client, tenant, other_tenant, settings):
    a = create(client, tenant, 1)
    b = create(client, tenant, 2)
    path = link_of(client, tenant, a["id"])
    token = path.rsplit("/", 1)[1]
    # Altered token, wrong key, wrong purpose, a hand-made payload for B: all 404.
    assert client.get(path[:-2] + ("aa" if not path.endswith("aa") else "bb")).status_code == 404
    wrong_key = LinkSigner("another-secret-key-0123456789", "preferences").sign({"o": tenant.org_id, "e": b["id"], "v": 0})
    assert client.get(f"/p/{wrong_key}").status_code == 404
    other_purpose = LinkSigner(settings.secret_key, "invite").sign({"o": tenant.org_id, "e": b["id"], "v": 0})
    assert client.get(f"/p/{other_purpose}").status_code == 404
    payload, _, signature = token.partition(".")
    assert client.get(f"/p/{payload}x.{signature}").status_code == 404
    # A's genuine link shows A only, and cannot reach another organisation's employee.
    assert "First2" not in client.get(path).get_data(as_text=True)
    theirs = create(client, other_tenant, 1)
    crossed = LinkSigner(settings.secret_key, "preferences").sign({"o": tenant.org_id, "e": theirs["id"], "v": 0})
    assert client.get(f"/p/{crossed}").status_code == 404
    # Revoking links kills the old one.
    client.post(f"{API}/employees/{a['id']}/revoke-links", headers=tenant.headers)
    assert client.get(path).status_code == 404
    assert client.get(link_of(client, tenant, a["id"])).status_code == 200


def test_self_enrolment_through_signed_link(client, tenant, other_tenant):
    emp = create(client, tenant, 1)
    other = create(client, tenant, 2)
    program = client.post(f"{API}/programs", json={"name": "Mindful mornings", "capacity": 1, "status": "open"}, headers=tenant.headers).get_json()
    client.post(f"{API}/programs/{program['id']}/enrolments", json={"employee_id": other["id"]}, headers=tenant.headers)
    path = link_of(client, tenant, emp["id"]) + f"/programs/{program['id']}/enrol"
    page = client.get(path)
    assert page.status_code == 200 and "Mindful mornings" in page.get_data(as_text=True)
    response = client.post(path, data={"csrf_token": csrf(client, path)})
    assert response.status_code == 302
    assert "You are on the waitlist." in client.get(path).get_data(as_text=True)
    items = client.get(f"{API}/programs/{program['id']}/enrolments?status=waitlisted", headers=tenant.headers).get_json()["items"]
    assert [(i["employee_id"], i["source"]) for i in items] == [(emp["id"], "employee_link")]
    # Another organisation's program is not found through this link.
    theirs = client.post(f"{API}/programs", json={"name": "Theirs", "status": "open"}, headers=other_tenant.headers).get_json()
    assert client.get(link_of(client, tenant, emp["id"]) + f"/programs/{theirs['id']}/enrol").status_code == 404


def test_data_export_from_preference_centre(client, tenant):
    emp = create(client, tenant, 1)
    path = link_of(client, tenant, emp["id"])
    response = client.post(path + "/export", data={"csrf_token": csrf(client, path)})
    assert response.status_code == 200 and response.mimetype == "application/json"
    data = json.loads(response.get_data(as_text=True))
    assert data["employee"]["email"] == "person1@example.com" and data["employee"]["external_id"] == "E1"


def _text_values(db) -> list[tuple[str, str, str]]:  # noqa: ANN001
    """(table, column, value) of every text-like cell of every table."""
    out = []
    with db.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            columns = [c for c in table.columns if isinstance(c.type, (String, Text, JSON, LargeBinary))]
            if not columns:
                continue
            for row in connection.execute(select(*columns)):
                for column, value in zip(columns, row):
                    if value is None:
                        continue
                    text = value.decode("utf-8", "replace") if isinstance(value, (bytes, memoryview)) else (
                        value if isinstance(value, str) else json.dumps(value))
                    out.append((table.name, column.name, text.lower()))
    return out


@pytest.mark.parametrize("via", ["api", "preference_link"])
def test_erasure_leaves_no_trace(client, tenant, db, via):
    secret = {"email": "zebediah.quux@example.com", "first_name": "Zebediah", "last_name": "Quixotewell"}
    csv_data = "\r\n".join([
        HEADER,
        f"Z1,{secret['email']},{secret['first_name']},{secret['last_name']},Eng,Core,,UTC",
        "Z2,report@example.com,Rita,Report,Eng,Core,Z1,UTC",
        "Z3,broken-email,Bad,Row,Eng,Core,,UTC",
    ]).encode()
    report = client.post(f"{API}/employees/import", data={"file": (io.BytesIO(csv_data), "hris.csv")}, headers=tenant.headers,
                         content_type="multipart/form-data").get_json()
    assert report["created"] == 2
    with db.session(tenant.org_id) as session:
        zeb = session.scalar(select(Employee).where(Employee.external_id == "Z1"))
        zeb_id = zeb.id
    client.patch(f"{API}/employees/{zeb_id}", json={"digest_topics": ["sleep"], "analytics_consent": True, "last_name": secret["last_name"] + "x"},
                 headers=tenant.headers)
    client.patch(f"{API}/employees/{zeb_id}", json={"last_name": secret["last_name"]}, headers=tenant.headers)
    program = client.post(f"{API}/programs", json={"name": "Walks", "capacity": 1, "status": "open"}, headers=tenant.headers).get_json()
    rita = client.get(f"{API}/employees?q=rita", headers=tenant.headers).get_json()["items"][0]
    client.post(f"{API}/programs/{program['id']}/enrolments", json={"employee_ids": [zeb_id, rita["id"]]}, headers=tenant.headers)
    before = _text_values(db)
    assert any(secret["email"] in v for _, _, v in before) and any(secret["last_name"].lower() in v for _, _, v in before)

    if via == "api":
        assert client.delete(f"{API}/employees/{zeb_id}", headers=tenant.headers).status_code == 204
    else:
        path = link_of(client, tenant, zeb_id)
        response = client.post(path + "/erase", data={"csrf_token": csrf(client, path), "confirm": "y"})
        assert response.status_code == 200 and "erased" in response.get_data(as_text=True)
        assert client.get(path).status_code == 404

    for table, column, value in _text_values(db):
        for needle in (secret["email"], secret["first_name"].lower(), secret["last_name"].lower()):
            assert needle not in value, f"{needle!r} survives in {table}.{column}"
    assert client.get(f"{API}/employees/{zeb_id}", headers=tenant.headers).status_code == 404
    # Rita moved up from the waitlist into the freed place; her manager link is gone.
    enrolled = client.get(f"{API}/programs/{program['id']}/enrolments?status=enrolled", headers=tenant.headers).get_json()["items"]
    assert [e["employee_id"] for e in enrolled] == [rita["id"]]
    rita_now = client.get(f"{API}/employees/{rita['id']}", headers=tenant.headers).get_json()
    assert rita_now["manager_external_id"] is None and rita_now["manager_id"] is None
    # The audit trail records the erasure by id, without the data.
    from shared.models import AuditEvent

    with db.session(tenant.org_id) as session:
        erased = session.scalars(select(AuditEvent).where(AuditEvent.action == "employee.erased")).one()
        assert erased.target_id == zeb_id
