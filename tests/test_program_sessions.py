"""Program sessions: CRUD under the programs API (HR admins only, tenant-isolated),
attendance of enrolled employees recorded as activity only with analytics consent."""
from __future__ import annotations

from datetime import timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import select

from shared.db import utcnow
from shared.models import ActivityEvent, AuditEvent, Employee, Role, SessionAttendance
from tests.test_programs import API, enrol, make_employees, make_program


def make_session(client, tenant, program_id: int, **overrides) -> dict:  # noqa: ANN001
    body = {"title": "Week 1: foundations", "starts_at": "2026-12-01T18:00:00+01:00", "duration_minutes": 60,
            "location": "Gym, 2nd floor", "capacity": 2}
    body.update(overrides)
    response = client.post(f"{API}/programs/{program_id}/sessions", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _iso(moment) -> str:  # noqa: ANN001
    return moment.replace(microsecond=0).isoformat()


def test_session_crud_and_validation(client, tenant):
    program = make_program(client, tenant)
    created = make_session(client, tenant, program["id"])
    assert created["id"] and created["program_id"] == program["id"] and created["attended_count"] == 0
    # Stored and answered in UTC, whatever offset it was given with.
    assert created["starts_at"] == "2026-12-01T17:00:00+00:00"
    online = make_session(client, tenant, program["id"], title="Week 2", starts_at="2026-12-08T17:00:00Z", location="",
                          join_url="https://meet.example.com/strength", capacity=None)
    listing = client.get(f"{API}/programs/{program['id']}/sessions", headers=tenant.headers).get_json()
    assert [s["id"] for s in listing["items"]] == [created["id"], online["id"]] and listing["total"] == 2

    bad = {"title": "", "starts_at": "2026-12-01T18:00:00", "duration_minutes": 0, "join_url": "javascript:alert(1)"}
    response = client.post(f"{API}/programs/{program['id']}/sessions", json=bad, headers=tenant.headers)
    assert response.status_code == 422 and response.mimetype == "application/problem+json"
    assert {e["field"] for e in response.get_json()["errors"]} >= {"title", "starts_at", "duration_minutes", "join_url"}
    unparseable = {"title": "Online", "starts_at": "2026-12-01T18:00:00Z", "duration_minutes": 30, "join_url": "https://[meet.example.com/x"}
    response = client.post(f"{API}/programs/{program['id']}/sessions", json=unparseable, headers=tenant.headers)
    assert response.status_code == 422 and [e["field"] for e in response.get_json()["errors"]] == ["join_url"]

    patched = client.patch(f"{API}/programs/{program['id']}/sessions/{created['id']}",
                           json={"title": "Week 1: form and breathing", "starts_at": "2026-12-01T19:00:00+01:00"}, headers=tenant.headers)
    assert patched.status_code == 200
    assert (patched.get_json()["title"], patched.get_json()["starts_at"]) == ("Week 1: form and breathing", "2026-12-01T18:00:00+00:00")
    assert client.patch(f"{API}/programs/{program['id']}/sessions/{created['id']}", json={"duration_minutes": 5000},
                        headers=tenant.headers).status_code == 422
    assert client.delete(f"{API}/programs/{program['id']}/sessions/{created['id']}", headers=tenant.headers).status_code == 204
    assert client.get(f"{API}/programs/{program['id']}/sessions/{created['id']}", headers=tenant.headers).status_code == 404
    # A session belongs to its program: another program's id does not reach it.
    other = make_program(client, tenant, name="Sleep better")
    assert client.get(f"{API}/programs/{other['id']}/sessions/{online['id']}", headers=tenant.headers).status_code == 404
    # Deleting the program deletes its sessions.
    assert client.delete(f"{API}/programs/{program['id']}", headers=tenant.headers).status_code == 204
    assert client.get(f"{API}/programs/{program['id']}/sessions", headers=tenant.headers).status_code == 404


def test_upcoming_filter(client, tenant):
    program = make_program(client, tenant)
    past = make_session(client, tenant, program["id"], starts_at=_iso(utcnow() - timedelta(days=1)))
    future = make_session(client, tenant, program["id"], starts_at=_iso(utcnow() + timedelta(days=1)))
    everything = client.get(f"{API}/programs/{program['id']}/sessions", headers=tenant.headers).get_json()["items"]
    upcoming = client.get(f"{API}/programs/{program['id']}/sessions?upcoming=true", headers=tenant.headers).get_json()["items"]
    assert [s["id"] for s in everything] == [past["id"], future["id"]]
    assert [s["id"] for s in upcoming] == [future["id"]]


def test_attendance_of_enrolled_employees_records_activity_only_with_consent(client, tenant, db):
    consenting, private, outsider, waiting = make_employees(client, tenant, 4)
    with db.session(tenant.org_id) as session:
        session.get(Employee, consenting).analytics_consent = True
    program = make_program(client, tenant, capacity=2)
    enrol(client, tenant, program["id"], consenting, private, waiting)  # the third is waitlisted
    started = make_session(client, tenant, program["id"], starts_at=_iso(utcnow() - timedelta(hours=1)), capacity=None)
    later = make_session(client, tenant, program["id"], starts_at=_iso(utcnow() + timedelta(days=2)))
    path = f"{API}/programs/{program['id']}/sessions/{started['id']}/attendance"

    for employee_id in (consenting, private):
        response = client.post(path, json={"employee_id": employee_id}, headers=tenant.headers)
        assert response.status_code == 201, response.get_json()
        assert response.get_json()["employee"]["id"] == employee_id
    # Marking twice is a no-op; not enrolled (or only waitlisted) is refused; a future session too.
    assert client.post(path, json={"employee_id": consenting}, headers=tenant.headers).status_code == 201
    for employee_id in (outsider, waiting):
        response = client.post(path, json={"employee_id": employee_id}, headers=tenant.headers)
        assert response.status_code == 422 and response.get_json()["errors"][0]["field"] == "employee_id"
    response = client.post(f"{API}/programs/{program['id']}/sessions/{later['id']}/attendance", json={"employee_id": consenting},
                           headers=tenant.headers)
    assert response.status_code == 409

    listing = client.get(path, headers=tenant.headers).get_json()
    assert sorted(a["employee_id"] for a in listing["items"]) == sorted([consenting, private])
    assert client.get(f"{API}/programs/{program['id']}/sessions/{started['id']}", headers=tenant.headers).get_json()["attended_count"] == 2

    with db.session(tenant.org_id) as session:
        events = session.scalars(select(ActivityEvent)).all()
        assert [(e.kind, e.program_id, e.event_id) for e in events] == [
            ("session_attended", program["id"], f"session-{started['id']}-attended-{consenting}")]
        assert events[0].occurred_at.replace(microsecond=0).isoformat() == started["starts_at"]
        actions = session.scalars(select(AuditEvent.action).where(AuditEvent.action == "program_session.attended")).all()
        assert len(actions) == 2

    # Undoing the mark removes the activity event too.
    assert client.delete(f"{path}/{consenting}", headers=tenant.headers).status_code == 204
    assert client.delete(f"{path}/{consenting}", headers=tenant.headers).status_code == 404
    with db.session(tenant.org_id) as session:
        assert session.scalars(select(ActivityEvent)).all() == []
        assert [a.employee_id for a in session.scalars(select(SessionAttendance))] == [private]


def test_session_capacity_limits_attendance(client, tenant):
    a, b = make_employees(client, tenant, 2)
    program = make_program(client, tenant, capacity=None)
    enrol(client, tenant, program["id"], a, b)
    small = make_session(client, tenant, program["id"], starts_at=_iso(utcnow() - timedelta(minutes=5)), capacity=1)
    path = f"{API}/programs/{program['id']}/sessions/{small['id']}/attendance"
    assert client.post(path, json={"employee_id": a}, headers=tenant.headers).status_code == 201
    assert client.post(path, json={"employee_id": b}, headers=tenant.headers).status_code == 409


def test_attendance_is_in_the_data_export_and_erasure_removes_it(client, tenant, db):
    (a,) = make_employees(client, tenant, 1)
    program = make_program(client, tenant)
    enrol(client, tenant, program["id"], a)
    started = make_session(client, tenant, program["id"], starts_at=_iso(utcnow() - timedelta(hours=1)))
    client.post(f"{API}/programs/{program['id']}/sessions/{started['id']}/attendance", json={"employee_id": a}, headers=tenant.headers)
    exported = client.get(f"{API}/employees/{a}/export", headers=tenant.headers).get_json()
    assert [(x["program_id"], x["session_id"], x["session_title"]) for x in exported["session_attendances"]] == [
        (program["id"], started["id"], started["title"])]
    assert client.delete(f"{API}/employees/{a}", headers=tenant.headers).status_code in (200, 204)
    with db.session(tenant.org_id) as session:
        assert session.scalars(select(SessionAttendance)).all() == []


def test_sessions_are_tenant_isolated_and_hr_admin_only(client, tenant, other_tenant, make_user):
    (theirs,) = make_employees(client, other_tenant, 1)
    (mine,) = make_employees(client, tenant, 1, start=5)
    their_program = make_program(client, other_tenant)
    enrol(client, other_tenant, their_program["id"], theirs)
    their_session = make_session(client, other_tenant, their_program["id"], starts_at=_iso(utcnow() - timedelta(hours=1)))
    my_program = make_program(client, tenant)
    enrol(client, tenant, my_program["id"], mine)
    my_session = make_session(client, tenant, my_program["id"], starts_at=_iso(utcnow() - timedelta(hours=1)))
    base = f"{API}/programs/{their_program['id']}/sessions"
    item = f"{base}/{their_session['id']}"
    for method, path, body in (
        ("get", base, None), ("post", base, {"title": "x", "starts_at": "2026-12-01T10:00:00Z", "duration_minutes": 30}),
        ("get", item, None), ("patch", item, {"title": "mine now"}), ("delete", item, None),
        ("get", f"{item}/attendance", None), ("post", f"{item}/attendance", {"employee_id": theirs}),
        ("delete", f"{item}/attendance/{theirs}", None),
    ):
        response = getattr(client, method)(path, json=body, headers=tenant.headers)
        assert response.status_code == 404 and response.mimetype == "application/problem+json", (method, path)
    # My session under their program id, and their employee in my session: not found / not enrolled here.
    assert client.get(f"{base}/{my_session['id']}", headers=tenant.headers).status_code == 404
    response = client.post(f"{API}/programs/{my_program['id']}/sessions/{my_session['id']}/attendance", json={"employee_id": theirs},
                           headers=tenant.headers)
    assert response.status_code == 422
    manager = make_user(tenant, Role.MANAGER)
    assert client.get(f"{API}/programs/{my_program['id']}/sessions", headers=manager.headers).status_code == 403
    assert client.post(f"{API}/programs/{my_program['id']}/sessions/{my_session['id']}/attendance", json={"employee_id": mine},
                       headers=manager.headers).status_code == 403
    assert client.get(item, headers=other_tenant.headers).get_json()["title"] == their_session["title"]


# ---- console -----------------------------------------------------------------------------

def test_console_lists_adds_and_deletes_sessions_and_marks_attendance(client, tenant, other_tenant, make_user):
    from tests.conftest import form_token, login_console

    (employee_id,) = make_employees(client, tenant, 1)
    program = make_program(client, tenant)
    enrol(client, tenant, program["id"], employee_id)
    page = f"/console/programs/{program['id']}"
    assert login_console(client, tenant.admin_email).status_code == 302
    html = client.get(page).get_data(as_text=True)
    assert "No sessions yet." in html and 'name="session-timezone"' in html and 'value="UTC"' in html

    # A month ahead, so the session is still in the future when attendance is checked below.
    berlin_start = (utcnow() + timedelta(days=30)).astimezone(ZoneInfo("Europe/Berlin")).replace(hour=18, minute=0, second=0, microsecond=0)
    form = {"session-title": "Warm-up clinic", "session-starts_at": berlin_start.strftime("%Y-%m-%dT%H:%M"),
            "session-timezone": "Europe/Berlin", "session-duration_minutes": "30", "session-location": "Room 4",
            "session-join_url": "", "session-capacity": ""}
    add = f"{page}/sessions"
    assert client.post(add, data=form).status_code == 400  # no CSRF token
    response = client.post(add, data=form | {"csrf_token": form_token(client, page)})
    assert response.status_code == 302
    (created,) = client.get(f"{API}/programs/{program['id']}/sessions", headers=tenant.headers).get_json()["items"]
    assert (created["title"], created["starts_at"], created["location"]) == ("Warm-up clinic", _iso(berlin_start.astimezone(timezone.utc)), "Room 4")
    # Bad input: nothing added, the reason shown.
    bad = form | {"session-timezone": "Mars/Olympus", "csrf_token": form_token(client, page)}
    follow = client.post(add, data=bad, follow_redirects=True).get_data(as_text=True)
    assert "Unknown IANA timezone" in follow
    assert client.get(f"{API}/programs/{program['id']}/sessions", headers=tenant.headers).get_json()["total"] == 1
    assert "Warm-up clinic" in client.get(page).get_data(as_text=True)

    # A session that has started: mark the enrolled employee as attended, then undo it.
    started = make_session(client, tenant, program["id"], title="Started", starts_at=_iso(utcnow() - timedelta(minutes=30)))
    session_page = f"{page}/sessions/{started['id']}"
    html = client.get(session_page).get_data(as_text=True)
    assert "Mark attended" in html and "F1 L1" in html
    mark = f"{session_page}/attendance/{employee_id}"
    assert client.post(mark).status_code == 400
    assert client.post(mark, data={"csrf_token": form_token(client, session_page)}).status_code == 302
    assert "Remove attendance" in client.get(session_page).get_data(as_text=True)
    assert client.get(f"{API}/programs/{program['id']}/sessions/{started['id']}", headers=tenant.headers).get_json()["attended_count"] == 1
    assert client.post(f"{mark}/remove", data={"csrf_token": form_token(client, session_page)}).status_code == 302
    assert client.get(f"{API}/programs/{program['id']}/sessions/{started['id']}", headers=tenant.headers).get_json()["attended_count"] == 0
    # A future session offers no attendance button.
    assert "Mark attended" not in client.get(f"{page}/sessions/{created['id']}").get_data(as_text=True)

    delete = f"{page}/sessions/{created['id']}/delete"
    assert client.post(delete, data={"csrf_token": form_token(client, page)}).status_code == 302
    assert client.get(f"{page}/sessions/{created['id']}").status_code == 404

    # Another organisation's sessions are not found; managers are refused.
    theirs = make_program(client, other_tenant)
    their_session = make_session(client, other_tenant, theirs["id"])
    assert client.get(f"/console/programs/{theirs['id']}/sessions/{their_session['id']}").status_code == 404
    token = form_token(client, page)
    assert client.post(f"/console/programs/{theirs['id']}/sessions/{their_session['id']}/delete", data={"csrf_token": token}).status_code == 404
    manager = make_user(tenant, Role.MANAGER)
    assert client.post("/console/logout", data={"csrf_token": form_token(client, page)}).status_code == 302
    assert login_console(client, manager.admin_email).status_code == 302
    assert client.get(session_page).status_code == 403
