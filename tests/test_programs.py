"""Programs, enrolment, withdrawal, the waitlist (also under concurrent withdrawals on
PostgreSQL), enrolment history, tenant isolation and the formula-safe enrolment export."""
from __future__ import annotations

import csv
import io
import threading

import pytest

from shared.models import Role
from tests.conftest import TEST_DB

API = "/api/v1"


def make_employees(client, tenant, n: int, start: int = 1) -> list[int]:  # noqa: ANN001
    ids = []
    for i in range(start, start + n):
        body = {"external_id": f"E{i}", "email": f"p{i}@example.com", "first_name": f"F{i}", "last_name": f"L{i}"}
        response = client.post(f"{API}/employees", json=body, headers=tenant.headers)
        assert response.status_code == 201
        ids.append(response.get_json()["id"])
    return ids


def make_program(client, tenant, **overrides) -> dict:  # noqa: ANN001
    body = {"name": "8 weeks of strength training", "topics": ["exercise"], "starts_on": "2026-12-01", "ends_on": "2027-01-26",
            "capacity": 2, "status": "open"}
    body.update(overrides)
    response = client.post(f"{API}/programs", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def enrol(client, tenant, program_id: int, *employee_ids: int) -> list[dict]:  # noqa: ANN001
    body = {"employee_id": employee_ids[0]} if len(employee_ids) == 1 else {"employee_ids": list(employee_ids)}
    response = client.post(f"{API}/programs/{program_id}/enrolments", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["items"]


def test_program_crud_and_validation(client, tenant):
    program = make_program(client, tenant)
    assert program["id"] and program["counts"] == {"enrolled": 0, "waitlisted": 0, "withdrawn": 0}
    bad = client.post(f"{API}/programs", json={"name": "x", "starts_on": "2026-12-01", "ends_on": "2026-11-01"}, headers=tenant.headers)
    assert bad.status_code == 422 and bad.get_json()["errors"][0]["field"] == "ends_on"
    patched = client.patch(f"{API}/programs/{program['id']}", json={"status": "closed", "description": "Lift"}, headers=tenant.headers)
    assert patched.status_code == 200 and patched.get_json()["status"] == "closed"
    listing = client.get(f"{API}/programs?status=closed", headers=tenant.headers).get_json()
    assert [p["id"] for p in listing["items"]] == [program["id"]]
    assert client.delete(f"{API}/programs/{program['id']}", headers=tenant.headers).status_code == 204
    assert client.get(f"{API}/programs/{program['id']}", headers=tenant.headers).status_code == 404


def test_waitlist_and_promotion_in_order(client, tenant):
    a, b, c, d = make_employees(client, tenant, 4)
    program = make_program(client, tenant, capacity=2)
    items = enrol(client, tenant, program["id"], a, b, c, d)
    assert [(i["employee_id"], i["status"], i["waitlist_position"]) for i in items] == [
        (a, "enrolled", None), (b, "enrolled", None), (c, "waitlisted", 1), (d, "waitlisted", 2)]
    # Enrolling again is a no-op.
    assert enrol(client, tenant, program["id"], a)[0]["status"] == "enrolled"
    # Withdrawing a waitlisted person promotes nobody; withdrawing an enrolled one promotes the head.
    first = items[0]["id"]
    response = client.delete(f"{API}/programs/{program['id']}/enrolments/{first}", headers=tenant.headers)
    assert response.status_code == 200 and response.get_json()["status"] == "withdrawn"
    listing = client.get(f"{API}/programs/{program['id']}/enrolments?status=enrolled", headers=tenant.headers).get_json()
    assert sorted(i["employee_id"] for i in listing["items"]) == sorted([b, c])
    waiting = client.get(f"{API}/programs/{program['id']}/enrolments?status=waitlisted", headers=tenant.headers).get_json()
    assert [(i["employee_id"], i["waitlist_position"]) for i in waiting["items"]] == [(d, 1)]
    # Re-joining after withdrawal goes to the back of the waitlist.
    assert enrol(client, tenant, program["id"], a)[0]["waitlist_position"] == 2
    # Raising the capacity promotes in order.
    client.patch(f"{API}/programs/{program['id']}", json={"capacity": 3}, headers=tenant.headers)
    enrolled = client.get(f"{API}/programs/{program['id']}/enrolments?status=enrolled", headers=tenant.headers).get_json()["items"]
    assert sorted(i["employee_id"] for i in enrolled) == sorted([b, c, d])
    # Bulk withdrawal and the history.
    response = client.post(f"{API}/programs/{program['id']}/enrolments/withdraw", json={"employee_ids": [b, c]}, headers=tenant.headers)
    assert [i["status"] for i in response.get_json()["items"]] == ["withdrawn", "withdrawn"]
    program_now = client.get(f"{API}/programs/{program['id']}", headers=tenant.headers).get_json()
    assert program_now["counts"] == {"enrolled": 2, "waitlisted": 0, "withdrawn": 2}
    events = client.get(f"{API}/programs/{program['id']}/enrolment-events?per_page=100", headers=tenant.headers).get_json()["items"]
    actions = [(e["employee_id"], e["action"]) for e in reversed(events)]
    assert actions[:5] == [(a, "enrolled"), (b, "enrolled"), (c, "waitlisted"), (d, "waitlisted"), (a, "withdrawn")]
    assert (c, "promoted") in actions and (d, "promoted") in actions and (a, "promoted") in actions


def test_left_employee_and_closed_program_cannot_enrol(client, tenant):
    (a,) = make_employees(client, tenant, 1)
    closed = make_program(client, tenant, status="closed")
    response = client.post(f"{API}/programs/{closed['id']}/enrolments", json={"employee_id": a}, headers=tenant.headers)
    assert response.status_code == 409
    program = make_program(client, tenant)
    client.patch(f"{API}/employees/{a}", json={"status": "left"}, headers=tenant.headers)
    response = client.post(f"{API}/programs/{program['id']}/enrolments", json={"employee_id": a}, headers=tenant.headers)
    assert response.status_code == 422


def test_tenant_isolation(client, tenant, other_tenant, make_user):
    (mine,) = make_employees(client, tenant, 1)
    (theirs,) = make_employees(client, other_tenant, 1)
    their_program = make_program(client, other_tenant)
    my_program = make_program(client, tenant)
    their_enrolment = enrol(client, other_tenant, their_program["id"], theirs)[0]
    for path in (f"/programs/{their_program['id']}", f"/programs/{their_program['id']}/enrolments",
                 f"/programs/{their_program['id']}/enrolments/{their_enrolment['id']}", f"/programs/{their_program['id']}/enrolment-events",
                 f"/programs/{their_program['id']}/enrolments/export.csv"):
        response = client.get(API + path, headers=tenant.headers)
        assert response.status_code == 404 and response.mimetype == "application/problem+json", path
    # Enrolling another tenant's employee in my program: that employee does not exist here.
    response = client.post(f"{API}/programs/{my_program['id']}/enrolments", json={"employee_id": theirs}, headers=tenant.headers)
    assert response.status_code == 422
    assert client.post(f"{API}/programs/{their_program['id']}/enrolments", json={"employee_id": mine}, headers=tenant.headers).status_code == 404
    manager = make_user(tenant, Role.MANAGER)
    assert client.get(f"{API}/programs", headers=manager.headers).status_code == 403
    assert client.post(f"{API}/programs/{my_program['id']}/enrolments", json={"employee_id": mine}, headers=manager.headers).status_code == 403


def test_enrolment_export_is_formula_safe(client, tenant):
    body = {"external_id": "=1+1", "email": "x@example.com", "first_name": "@SUM(1)", "last_name": "-3"}
    emp = client.post(f"{API}/employees", json=body, headers=tenant.headers).get_json()
    program = make_program(client, tenant)
    enrol(client, tenant, program["id"], emp["id"])
    response = client.get(f"{API}/programs/{program['id']}/enrolments/export.csv", headers=tenant.headers)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert (rows[0]["external_id"], rows[0]["first_name"], rows[0]["last_name"], rows[0]["status"]) == ("'=1+1", "'@SUM(1)", "'-3", "enrolled")


@pytest.mark.skipif(TEST_DB != "postgresql", reason="row locks under real concurrency need PostgreSQL")
def test_waitlist_promotion_order_under_concurrent_withdrawals(client, tenant, db):
    from shared.domain import programs
    from shared.models import Enrolment, EnrolmentStatus

    capacity, waiting, withdrawing = 10, 15, 8
    ids = make_employees(client, tenant, capacity + waiting)
    program = make_program(client, tenant, capacity=capacity)
    enrol(client, tenant, program["id"], *ids)
    holders, queue = ids[:capacity], ids[capacity:]
    barrier = threading.Barrier(withdrawing)
    failures: list[BaseException] = []

    def withdraw(employee_id: int) -> None:
        try:
            barrier.wait(timeout=10)
            with db.session(tenant.org_id) as session:
                programs.withdraw(session, None, program["id"], employee_id)
        except BaseException as error:  # noqa: BLE001
            failures.append(error)

    threads = [threading.Thread(target=withdraw, args=(e,)) for e in holders[:withdrawing]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not failures
    with db.session(tenant.org_id) as session:
        rows = session.scalars(programs.select(Enrolment).where(Enrolment.program_id == program["id"])).all()
        enrolled = {r.employee_id for r in rows if r.status == EnrolmentStatus.ENROLLED}
        still_waiting = [r.employee_id for r in sorted((r for r in rows if r.status == EnrolmentStatus.WAITLISTED), key=lambda r: r.waitlist_seq)]
    assert len(enrolled) == capacity
    # Exactly the first `withdrawing` people of the waitlist were promoted, the rest keep their order.
    assert enrolled == set(holders[withdrawing:]) | set(queue[:withdrawing])
    assert still_waiting == queue[withdrawing:]
