"""Activity events and anonymised reports: consent, ingestion, retention, erasure,
aggregation (against a hand-written GROUP BY), incremental builds, manager scoping,
suppression in API answers and formula-safe CSV."""
from __future__ import annotations

import csv
import io
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select, text

from shared.db import utcnow
from shared.domain import activity, reports
from shared.domain.digest_schedule import iso_week_of, shift_week, week_start
from shared.domain.employees import erase_employee, record_consent
from shared.models import (
    ActivityEvent,
    ConsentKind,
    ConsentSource,
    Employee,
    ReleaseLog,
    ReportCell,
    ReportDirtyWeek,
    ReportPersonWeek,
    ReportSettings,
    Role,
)
from tests.conftest import TEST_DB

WEEK = iso_week_of((utcnow() - timedelta(days=14)).date())


def at(week: str, day: int = 1, hour: int = 10) -> datetime:
    return datetime.combine(week_start(week) + timedelta(days=day), datetime.min.time(), tzinfo=timezone.utc).replace(hour=hour)


def add_employee(session, dept="Sales", team="Blue", manager=None, consent=True, email=None, first="Ann", last=None):  # noqa: ANN001
    key = uuid.uuid4().hex[:8]
    e = Employee(external_id=f"E{key}", email=email or f"e{key}@example.com", first_name=first, last_name=last or f"Zed{key}",
                 department=dept, team=team, manager_id=manager.id if manager else None, analytics_consent=consent)
    e.created_at = utcnow() - timedelta(days=400)
    session.add(e)
    session.flush()
    return e


def build_org(db, tenant, sizes=None, manager_email=None):  # noqa: ANN001
    """A manager (Sales) with two teams: Blue (under the manager) and Green (another manager)."""
    sizes = sizes or {"Blue": 6, "Green": 6}
    with db.session(tenant.org_id) as s:
        boss = add_employee(s, dept="Sales", team="", email=manager_email, first="Mona")
        lead = add_employee(s, dept="Sales", team="", manager=boss, first="Lena")
        people = {}
        for team, n in sizes.items():
            mgr = boss if team == "Blue" else lead
            people[team] = [add_employee(s, team=team, manager=mgr) for _ in range(n)]
        return boss.id, lead.id, {t: [e.id for e in es] for t, es in people.items()}


def record(db, tenant, employee_ids, kind="pulse_answered", week=WEEK, score=4, **kw):  # noqa: ANN001
    with db.session(tenant.org_id) as s:
        n = 0
        for eid in employee_ids:
            e = s.get(Employee, eid)
            n += activity.record_event(s, e, kind, occurred_at=at(week), score=score if kind == "pulse_answered" else None, **kw)
        return n


def build(db, tenant, weeks=None):  # noqa: ANN001
    with db.session(tenant.org_id) as s:
        return reports.build(s, weeks)


# ---- activity ----------------------------------------------------------------------------------

def test_consent_withdrawal_stops_new_events(db, tenant):
    _, _, people = build_org(db, tenant)
    eid = people["Blue"][0]
    assert record(db, tenant, [eid]) == 1
    with db.session(tenant.org_id) as s:
        record_consent(s, s.get(Employee, eid), ConsentKind.ACTIVITY_ANALYTICS, False, ConsentSource.EMPLOYEE_LINK)
    assert record(db, tenant, [eid], kind="article_read") == 0
    with db.session(tenant.org_id) as s:
        assert s.scalar(select(func.count()).select_from(ActivityEvent)) == 1


def test_ingest_api_is_idempotent_and_reports_each_item(client, db, tenant):
    _, _, people = build_org(db, tenant)
    blue = people["Blue"]
    with db.session(tenant.org_id) as s:
        s.get(Employee, blue[1]).analytics_consent = False
    when = at(WEEK).isoformat()
    events = [
        {"event_id": "a1", "kind": "pulse_answered", "employee_id": blue[0], "occurred_at": when, "score": 5},
        {"event_id": "a2", "kind": "article_read", "employee_id": blue[1], "occurred_at": when, "topic": "sleep"},
        {"event_id": "a3", "kind": "pulse_answered", "employee_id": blue[2], "occurred_at": when, "score": 9},
        {"event_id": "a4", "kind": "nonsense", "employee_id": blue[2], "occurred_at": when},
        {"event_id": "a1", "kind": "pulse_answered", "employee_id": blue[0], "occurred_at": when, "score": 5},
        {"event_id": "a5", "kind": "digest_clicked", "employee_id": 999999, "occurred_at": when},
        {"event_id": "a6", "kind": "digest_clicked", "employee_id": blue[3], "occurred_at": (utcnow() + timedelta(days=2)).isoformat()},
    ]
    first = client.post("/api/v1/activity", json={"events": events}, headers=tenant.headers)
    assert first.status_code == 200, first.get_json()
    body = first.get_json()
    assert (body["accepted"], body["duplicate"], body["ignored_no_consent"]) == (1, 1, 1)
    assert [(e["index"], sorted(e["errors"])) for e in body["errors"]] == [
        (2, ["score"]), (3, ["kind"]), (5, ["employee_id"]), (6, ["occurred_at"])]
    again = client.post("/api/v1/activity", json={"events": events[:1]}, headers=tenant.headers).get_json()
    assert (again["accepted"], again["duplicate"]) == (0, 1)
    too_many = [dict(events[0], event_id=f"b{i}") for i in range(1001)]
    assert client.post("/api/v1/activity", json={"events": too_many}, headers=tenant.headers).status_code == 422
    with db.session(tenant.org_id) as s:
        assert s.scalar(select(func.count()).select_from(ActivityEvent)) == 1
        assert s.scalars(select(ReportDirtyWeek.iso_week)).all() == [WEEK]


def test_event_ids_are_per_organisation(client, db, tenant, other_tenant):
    _, _, mine = build_org(db, tenant)
    _, _, theirs = build_org(db, other_tenant)
    when = at(WEEK).isoformat()
    for t, people in ((tenant, mine), (other_tenant, theirs)):
        body = {"events": [{"event_id": "same", "kind": "article_read", "employee_id": people["Blue"][0], "occurred_at": when}]}
        assert client.post("/api/v1/activity", json=body, headers=t.headers).get_json()["accepted"] == 1
    # another organisation's employee is unknown here
    body = {"events": [{"event_id": "x", "kind": "article_read", "employee_id": theirs["Blue"][0], "occurred_at": when}]}
    assert client.post("/api/v1/activity", json=body, headers=tenant.headers).get_json()["errors"][0]["errors"] == {
        "employee_id": ["No such employee in this organisation."]}


def test_retention_deletes_old_raw_events_and_keeps_built_cells(db, tenant):
    _, _, people = build_org(db, tenant)
    old_week = iso_week_of((utcnow() - timedelta(days=500)).date())
    record(db, tenant, people["Blue"], week=old_week)
    record(db, tenant, people["Blue"], week=WEEK)
    build(db, tenant)
    with db.session(tenant.org_id) as s:
        assert activity.purge_expired(s) == 6
        assert s.scalars(select(ActivityEvent.iso_week).distinct()).all() == [WEEK]
        assert s.scalar(select(func.count()).select_from(ReportCell).where(ReportCell.iso_week == old_week)) > 0
        activity.report_settings(s).activity_retention_months = 0
    with db.session(tenant.org_id) as s:
        assert activity.purge_expired(s, now=utcnow() + timedelta(days=1)) == 6
        assert s.scalar(select(func.count()).select_from(ActivityEvent)) == 0


def test_erasure_removes_the_employees_events_and_memberships(client, db, tenant):
    _, _, people = build_org(db, tenant)
    record(db, tenant, people["Blue"])
    build(db, tenant)
    gone = people["Blue"][0]
    with db.session(tenant.org_id) as s:
        who = activity.pseudonym(s, gone)
        erase_employee(s, None, gone)
    with db.session(tenant.org_id) as s:
        assert s.scalar(select(func.count()).select_from(ActivityEvent).where(ActivityEvent.pseudonym == who)) == 0
        assert s.scalar(select(func.count()).select_from(ReportPersonWeek).where(ReportPersonWeek.pseudonym == who)) == 0
        assert s.scalars(select(ReportDirtyWeek.iso_week)).all() == [WEEK]
    build(db, tenant)
    with db.session(tenant.org_id) as s:
        org_cell = s.scalar(select(ReportCell).where(ReportCell.group_kind == "org", ReportCell.window == 1))
        assert org_cell.participants == 5


def test_no_email_name_or_employee_id_in_analytics_tables(client, db, tenant, make_user):
    boss, _, people = build_org(db, tenant, manager_email="mona@example.com")
    make_user(tenant, Role.MANAGER, email="mona@example.com")
    everyone = [boss, *people["Blue"], *people["Green"]]
    record(db, tenant, everyone)
    record(db, tenant, everyone, kind="article_read", topic="sleep")
    build(db, tenant)
    assert client.get(f"/api/v1/reports?period={WEEK}", headers=tenant.headers).status_code == 200
    with db.session(tenant.org_id) as s:
        secrets = set()
        for e in s.scalars(select(Employee)):
            secrets |= {e.email, e.first_name, e.last_name, e.external_id}
        ids = {str(e) for e in everyone}
    tables = ["activity_events", "activity_lines", "report_cells", "report_person_weeks", "report_headcounts",
              "report_release_log", "report_dirty_weeks"]
    with db.engine.connect() as c:
        for table in tables:
            rows = c.execute(text(f"SELECT * FROM {table}")).all()
            assert rows or table == "report_dirty_weeks", table
            dump = " ".join(str(v) for row in rows for v in row)
            for secret in secrets:
                assert secret not in dump, (table, secret)
            cols = set(c.execute(text(f"SELECT * FROM {table}")).keys())
            assert not cols & {"employee_id", "email", "first_name", "last_name", "name"}, table
    with db.engine.connect() as c:
        values = {str(v) for row in c.execute(text("SELECT pseudonym FROM activity_events")) for v in row}
    assert not values & ids


# ---- aggregation -------------------------------------------------------------------------------

def _scenario(db, tenant):  # noqa: ANN001
    _, _, people = build_org(db, tenant, sizes={"Blue": 7, "Green": 6})
    blue, green = people["Blue"], people["Green"]
    prev = shift_week(WEEK, -1)
    for i, eid in enumerate(blue):
        record(db, tenant, [eid], score=1 + i % 5)
        record(db, tenant, [eid], kind="digest_delivered")
        if i % 2:
            record(db, tenant, [eid], kind="digest_clicked")
    for i, eid in enumerate(green[:4]):
        record(db, tenant, [eid], kind="article_read", topic="sleep" if i % 2 else "stress")
        record(db, tenant, [eid], kind="program_enrolled", program_id=3)
    record(db, tenant, green[:2], kind="program_completed", program_id=3)
    record(db, tenant, blue[:5], week=prev, score=3)
    return people


HAND_WRITTEN = """
SELECT department || '/' || team AS team_key,
       COUNT(DISTINCT pseudonym),
       COUNT(DISTINCT CASE WHEN kind = 'digest_delivered' THEN pseudonym END),
       COUNT(DISTINCT CASE WHEN kind = 'digest_clicked' THEN pseudonym END),
       COUNT(DISTINCT CASE WHEN kind = 'pulse_answered' THEN pseudonym END),
       COALESCE(SUM(CASE WHEN kind = 'pulse_answered' THEN score END), 0),
       COUNT(DISTINCT CASE WHEN kind = 'article_read' THEN pseudonym END),
       COUNT(DISTINCT CASE WHEN kind = 'program_enrolled' THEN pseudonym END),
       COUNT(DISTINCT CASE WHEN kind = 'program_completed' THEN pseudonym END)
FROM activity_events WHERE org_id = :org AND iso_week IN :weeks AND team <> ''
GROUP BY department, team ORDER BY 1
"""


def test_aggregation_equals_a_hand_written_group_by(db, tenant, other_tenant):
    _scenario(db, tenant)
    _scenario(db, other_tenant)  # noise in another organisation
    build(db, tenant)
    from sqlalchemy import bindparam

    for window in (1, 4):
        weeks = [shift_week(WEEK, -i) for i in range(window)]
        with db.engine.connect() as c:
            expected = [tuple(r) for r in c.execute(text(HAND_WRITTEN).bindparams(bindparam("weeks", expanding=True)),
                                                    {"org": tenant.org_id, "weeks": weeks})]
        with db.session(tenant.org_id) as s:
            got = [(c.group_key, c.participants, c.delivered, c.clicked, c.respondents, c.pulse_sum, c.readers, c.enrolments, c.completions)
                   for c in s.scalars(select(ReportCell).where(ReportCell.group_kind == "team", ReportCell.window == window,
                                                               ReportCell.iso_week == WEEK).order_by(ReportCell.group_key))]
        assert got == expected
        assert [g[0] for g in got] == ["Sales/Blue", "Sales/Green"]
    with db.session(tenant.org_id) as s:
        org1 = s.scalar(select(ReportCell).where(ReportCell.group_kind == "org", ReportCell.window == 1, ReportCell.iso_week == WEEK))
        assert (org1.participants, org1.headcount, org1.respondents, org1.pulse_answers) == (11, 15, 7, 7)
        lines = {c.headcount: c.participants for c in s.scalars(select(ReportCell).where(
            ReportCell.group_kind == "line", ReportCell.window == 1, ReportCell.iso_week == WEEK))}
        # the boss's whole line: Lena + 7 Blue + 6 Green (14 people, 11 active); Lena's line: Green (6, 4 active)
        assert lines == {14: 11, 6: 4}
        sets = reports.member_sets(s, 1, WEEK, lambda name: True)
        members = sorted((name, len(who)) for (kind, key, name), who in sets.items() if (kind, key) == ("team", "Sales/Blue"))
        assert members == [("all", 7), ("pulse", 7), ("score:1", 2), ("score:2", 2), ("score:3", 1), ("score:4", 1), ("score:5", 1)]
        green = sorted((name, len(who)) for (kind, key, name), who in sets.items() if (kind, key) == ("team", "Sales/Green"))
        assert green == [("all", 4), ("topic:sleep", 2), ("topic:stress", 2)]


def test_incremental_build_recomputes_only_dirty_weeks(db, tenant):
    _, _, people = build_org(db, tenant)
    early = shift_week(WEEK, -20)
    record(db, tenant, people["Blue"], week=early)
    record(db, tenant, people["Blue"], week=WEEK)
    first = build(db, tenant)
    assert first.weeks == sorted([early, WEEK])
    with db.session(tenant.org_id) as s:
        before = {(c.window, c.iso_week, c.group_kind, c.group_key): (c.id, c.built_at) for c in s.scalars(select(ReportCell))}
        assert not s.scalars(select(ReportDirtyWeek)).all()
    assert build(db, tenant).periods == 0  # nothing new, nothing rebuilt
    record(db, tenant, people["Green"], week=WEEK, kind="article_read")
    second = build(db, tenant)
    assert second.weeks == [WEEK]
    assert second.periods == 3  # the week and the 4- and 12-week windows ending with it
    with db.session(tenant.org_id) as s:
        after = {(c.window, c.iso_week, c.group_kind, c.group_key): (c.id, c.built_at) for c in s.scalars(select(ReportCell))}
    for key, value in before.items():
        if key[1] == WEEK:
            continue
        assert after[key] == value, key  # untouched
    assert {k[0] for k, v in after.items() if k[1] == WEEK and before.get(k) != v} == {1, 4, 12}


def test_build_task_runs_on_a_worker(client, db, tenant, celery_worker):
    import time

    _, _, people = build_org(db, tenant)
    record(db, tenant, people["Blue"])
    assert client.post("/api/v1/reports/build", json={}, headers=tenant.headers).status_code == 202
    deadline = time.time() + 20
    while time.time() < deadline:
        with db.session(tenant.org_id) as s:
            if s.scalar(select(func.count()).select_from(ReportCell)):
                break
        time.sleep(0.2)
    with db.session(tenant.org_id) as s:
        assert s.scalar(select(func.count()).select_from(ReportCell).where(ReportCell.window == 1)) > 0


# ---- reports API ---------------------------------------------------------------------------------

def _cells(response) -> dict:  # noqa: ANN001
    assert response.status_code == 200, response.get_json()
    return {(c["group"], c["bucket"]): c for c in response.get_json()["cells"]}


def test_suppression_is_visible_in_api_answers(client, db, tenant):
    _, _, people = build_org(db, tenant, sizes={"Blue": 8, "Green": 2})
    record(db, tenant, people["Blue"] + people["Green"])
    build(db, tenant)
    cells = _cells(client.get(f"/api/v1/reports?period={WEEK}&measure=pulse", headers=tenant.headers))
    green = cells[("team:Sales/Green", None)]
    assert green["suppressed"] is True and green["reason"] == "fewer than 5 people"
    assert green["values"] is None and green["people_count"] is None
    blue = cells[("team:Sales/Blue", None)]
    # Sales = Blue + Green: showing both Sales and Blue would reveal Green by subtraction
    assert cells[("department:Sales", None)]["suppressed"] or blue["suppressed"]
    shown = [c for c in cells.values() if not c["suppressed"]]
    assert shown and all(c["people_count"] >= 5 for c in shown)
    assert cells[("org", None)]["values"]["pulse_mean"] == 4.0
    text_body = client.get(f"/api/v1/reports?period={WEEK}&measure=pulse", headers=tenant.headers).get_data(as_text=True)
    with db.session(tenant.org_id) as s:
        for p in s.scalars(select(ActivityEvent.pseudonym)):
            assert p not in text_body


def test_team_that_gained_one_member_is_not_differenced(client, db, tenant):
    _, _, people = build_org(db, tenant, sizes={"Blue": 7, "Green": 0})
    blue = people["Blue"]
    prev = shift_week(WEEK, -1)
    record(db, tenant, blue[:6], week=prev, score=3)
    record(db, tenant, blue, week=WEEK, score=3)  # the seventh person answers for the first time
    build(db, tenant)
    first = _cells(client.get(f"/api/v1/reports?period={prev}&measure=pulse&group=team:Sales/Blue", headers=tenant.headers))
    assert first[("team:Sales/Blue", None)]["suppressed"] is False
    second = _cells(client.get(f"/api/v1/reports?period={WEEK}&measure=pulse&group=team:Sales/Blue", headers=tenant.headers))
    cell = second[("team:Sales/Blue", None)]
    assert cell["suppressed"] is True
    assert cell["reason"] == "would reveal a small difference from an earlier report"
    with db.session(tenant.org_id) as s:
        assert s.scalar(select(func.count()).select_from(ReleaseLog)) > 0


def test_managers_see_only_their_own_reporting_line(client, db, tenant, make_user):
    boss, lead, people = build_org(db, tenant, sizes={"Blue": 6, "Green": 6}, manager_email="lena.lead@example.com")
    with db.session(tenant.org_id) as s:
        s.get(Employee, boss).email = "mona.boss@example.com"
        s.get(Employee, lead).email = "lena.lead@example.com"
    mona = make_user(tenant, Role.MANAGER, email="mona.boss@example.com")
    lena = make_user(tenant, Role.MANAGER, email="lena.lead@example.com")
    stranger = make_user(tenant, Role.MANAGER)
    record(db, tenant, people["Blue"] + people["Green"])
    build(db, tenant)
    lena_view = _cells(client.get(f"/api/v1/reports?period={WEEK}", headers=lena.headers))
    assert set(lena_view) == {(f"line:{lead}", None)}
    assert lena_view[(f"line:{lead}", None)]["people_count"] == 6
    mona_view = _cells(client.get(f"/api/v1/reports?period={WEEK}", headers=mona.headers))
    assert {g for g, _ in mona_view} == {f"line:{boss}", f"line:{lead}"}
    # Lena cannot reach her manager's line, a department, a team or the organisation
    assert client.get(f"/api/v1/reports?period={WEEK}&group=line:{boss}", headers=lena.headers).status_code == 404
    for group in ("department:Sales", "team:Sales/Blue", "org", "department"):
        assert client.get(f"/api/v1/reports?period={WEEK}&group={group}", headers=lena.headers).status_code == 403
    assert client.get(f"/api/v1/reports/export.csv?period={WEEK}&group=team:Sales/Blue", headers=lena.headers).status_code == 403
    assert client.get(f"/api/v1/reports?period={WEEK}", headers=stranger.headers).status_code == 403
    assert client.post("/api/v1/activity", json={"events": []}, headers=lena.headers).status_code == 403
    assert client.get("/api/v1/reports/settings", headers=lena.headers).status_code == 403


def test_csv_export_is_formula_injection_safe(client, db, tenant):
    with db.session(tenant.org_id) as s:
        people = [add_employee(s, dept="=HYPERLINK(\"http://evil\")", team="+cmd") for _ in range(6)]
        ids = [p.id for p in people]
    record(db, tenant, ids)
    build(db, tenant)
    response = client.get(f"/api/v1/reports/export.csv?period={WEEK}&measure=participation", headers=tenant.headers)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0] == reports.CSV_HEADER
    for row in rows[1:]:
        for value in row:
            assert not value.startswith(("=", "+", "-", "@")), row
    assert any(r[3].startswith("'=HYPERLINK") for r in rows[1:])


def test_settings_and_differential_privacy_budget(client, db, tenant):
    _, _, people = build_org(db, tenant, sizes={"Blue": 12, "Green": 0})
    record(db, tenant, people["Blue"])
    build(db, tenant)
    assert client.get("/api/v1/reports/settings", headers=tenant.headers).get_json()["activity_retention_months"] == 13
    patched = client.patch("/api/v1/reports/settings", json={"dp_enabled": True, "epsilon_per_period": 2.0, "epsilon_per_value": 0.05},
                           headers=tenant.headers)
    assert patched.status_code == 200 and patched.get_json()["dp_enabled"] is True
    assert client.patch("/api/v1/reports/settings", json={"activity_retention_months": 0}, headers=tenant.headers).status_code == 422
    first = client.get(f"/api/v1/reports?period={WEEK}&measure=participation", headers=tenant.headers)
    assert first.status_code == 200, first.get_json()
    dp = first.get_json()["dp"]
    assert dp["enabled"] and dp["epsilon_remaining"] < 2.0
    statuses = [client.get(f"/api/v1/reports?period={WEEK}&measure=participation", headers=tenant.headers).status_code for _ in range(10)]
    assert 409 in statuses  # the budget of the period runs out


@pytest.mark.parametrize("query", ["measure=nope", "window=2", "period=2026-48"])
def test_bad_report_queries_are_rejected(client, tenant, query):
    assert client.get(f"/api/v1/reports?{query}", headers=tenant.headers).status_code == 422


# ---- console dashboard and privacy page -------------------------------------------------------

def _console_login(client, email):  # noqa: ANN001
    from tests.conftest import ADMIN_PASSWORD, form_token

    token = form_token(client, "/console/login")
    response = client.post("/console/login", data={"email": email, "password": ADMIN_PASSWORD, "csrf_token": token})
    assert response.status_code == 302


def test_dashboard_shows_charts_tables_and_suppressed_cells(client, db, tenant, make_user):
    boss, lead, people = build_org(db, tenant, sizes={"Blue": 8, "Green": 2}, manager_email="mona.dash@example.com")
    make_user(tenant, Role.MANAGER, email="mona.dash@example.com")
    record(db, tenant, people["Blue"] + people["Green"])
    record(db, tenant, people["Blue"], kind="digest_delivered")
    build(db, tenant)
    _console_login(client, tenant.admin_email)
    html = client.get("/console/reports").get_data(as_text=True)
    assert "<svg" in html and "Participation trend" in html and "Pulse trend" in html
    assert "Sales/Green" in html and "Suppressed: fewer than 5 people" in html
    assert 'data-testid="suppressed-cell"' in html
    assert "style=" not in html and "<script" not in html
    with db.session(tenant.org_id) as s:
        for p in s.scalars(select(ActivityEvent.pseudonym)):
            assert p not in html
    client.post("/console/logout", data={"csrf_token": _token(client)})
    client2 = client.application.test_client()
    _console_login(client2, "mona.dash@example.com")
    mine = client2.get("/console/reports").get_data(as_text=True)
    assert "Reporting line of Mona" in mine and "Sales/Blue" not in mine and "Whole organisation" not in mine


def _token(client):  # noqa: ANN001
    from tests.conftest import form_token

    return form_token(client, "/console/")


def test_manager_without_an_employee_record_gets_no_dashboard(client, db, tenant, make_user):
    stranger = make_user(tenant, Role.MANAGER)
    _console_login(client, stranger.admin_email)
    response = client.get("/console/reports")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "not linked to an employee" in html and "<svg" not in html


def test_privacy_page_explains_k_and_how_to_withdraw(client, db, tenant, settings):
    from shared.domain.employees import preference_token

    with db.session(tenant.org_id) as s:
        e = add_employee(s, consent=True)
        token = preference_token(settings.secret_key, e)
    html = client.get(f"/p/{token}/privacy").get_data(as_text=True)
    assert "fewer than <strong>5</strong> people" in html
    assert "You have <strong>agreed</strong>" in html
    assert f"/p/{token}" in html and "13 months" in html
    assert client.get("/p/not-a-token/privacy").status_code == 404
    assert f'href="/p/{token}/privacy"' in client.get(f"/p/{token}").get_data(as_text=True)


def test_product_events_are_synced_once_and_only_with_consent(db, tenant):
    from shared.models import DigestSend, EnrolmentEvent, Program, PulseResponse, SendState

    _, _, people = build_org(db, tenant, sizes={"Blue": 3, "Green": 0})
    yes, no, other = people["Blue"]
    now = utcnow()
    with db.session(tenant.org_id) as s:
        s.get(Employee, no).analytics_consent = False
        program = Program(name="Sleep well")
        s.add(program)
        s.flush()
        for eid in (yes, no):
            s.add(DigestSend(employee_id=eid, iso_week=iso_week_of(now.date()), state=SendState.SENT, sent_at=now))
            s.add(PulseResponse(employee_id=eid, iso_week=iso_week_of(now.date()), score=2, answered_at=now))
            s.add(EnrolmentEvent(program_id=program.id, employee_id=eid, action="enrolled", source="admin", at=now))
        s.add(DigestSend(employee_id=other, iso_week=iso_week_of(now.date()), state=SendState.FAILED))
    with db.session(tenant.org_id) as s:
        first = activity.sync_product_events(s)
    assert (first.accepted, first.ignored_no_consent, first.errors) == (3, 3, [])
    with db.session(tenant.org_id) as s:
        again = activity.sync_product_events(s)
        assert (again.accepted, again.duplicate) == (0, 3)
        kinds = sorted(s.scalars(select(ActivityEvent.kind)))
        assert kinds == ["digest_delivered", "program_enrolled", "pulse_answered"]
        assert s.scalar(select(ActivityEvent.score).where(ActivityEvent.kind == "pulse_answered")) == 2


def _cli(settings, monkeypatch):  # noqa: ANN001, ANN202
    """Run ``wellbeing reports ...`` against the test database."""
    from click.testing import CliRunner

    from services.cli import main

    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("WELLBEING_ENV", "testing")
    monkeypatch.setenv("SECRET_KEY", settings.secret_key)
    return lambda *args: CliRunner().invoke(main, ["reports", *args])


def test_cli_reports_build(db, tenant, settings, monkeypatch):
    cli = _cli(settings, monkeypatch)
    _, _, people = build_org(db, tenant)
    record(db, tenant, people["Blue"])
    result = cli("build", "--org", str(tenant.org_id))
    assert result.exit_code == 0, result.output
    assert "1 weeks, 3 periods" in result.output
    with db.session(tenant.org_id) as s:
        assert s.scalar(select(func.count()).select_from(ReportCell).where(ReportCell.iso_week == WEEK)) > 0
    bad = cli("build", "--org", str(tenant.org_id), "--week", "2026-48")
    assert bad.exit_code == 2
    missing = cli("build", "--org", "99999")
    assert missing.exit_code == 1 and "not found" in missing.output


def test_key_rotation_re_pseudonymises_current_employees_and_unlinks_former_ones(client, db, tenant, settings, monkeypatch):
    cli = _cli(settings, monkeypatch)
    boss, lead, people = build_org(db, tenant, sizes={"Blue": 6, "Green": 5})
    everyone = [boss, lead, *people["Blue"], *people["Green"]]
    prev = shift_week(WEEK, -1)
    record(db, tenant, everyone, week=prev)
    record(db, tenant, everyone, week=WEEK)
    build(db, tenant)
    assert client.get(f"/api/v1/reports?period={prev}&measure=pulse&group=team:Sales/Blue", headers=tenant.headers).status_code == 200
    former = people["Green"][0]
    with db.session(tenant.org_id) as s:
        old = {e: activity.pseudonym(s, e) for e in everyone}
        s.execute(text("UPDATE employees SET manager_id = NULL WHERE manager_id = :f"), {"f": former})
        s.delete(s.get(Employee, former))  # gone from the records without the erasure hook (e.g. an old import)
        before = {(c.window, c.iso_week, c.group_kind, c.participants, c.respondents) for c in s.scalars(select(ReportCell))}
    result = cli("rotate-key", "--org", str(tenant.org_id))
    assert result.exit_code == 0, result.output
    assert "version 2" in result.output
    with db.session(tenant.org_id) as s:
        new = {e: activity.pseudonym(s, e) for e in everyone if e != former}
        stored = set(s.scalars(select(ActivityEvent.pseudonym)))
        # current employees carry their new pseudonym everywhere; no old one of theirs is left
        assert set(new.values()) <= stored and not {old[e] for e in new} & stored
        assert set(s.scalars(select(ActivityEvent.manager).distinct())) <= set(new.values()) | {""}
        lines = set(s.scalars(select(ReportCell.group_key).where(ReportCell.group_kind == "line")))
        assert lines == {new[boss], new[lead]}
        # the former employee's events are still counted, under a pseudonym nobody can recompute
        assert old[former] in stored and old[former] not in new.values()
        assert s.scalar(select(func.count()).select_from(ReportPersonWeek).where(ReportPersonWeek.pseudonym == old[former])) == 2
    # a rebuild from the re-pseudonymised events gives the same cells: each person's weeks still join up
    build(db, tenant, [prev, WEEK])
    with db.session(tenant.org_id) as s:
        after = {(c.window, c.iso_week, c.group_kind, c.participants, c.respondents) for c in s.scalars(select(ReportCell))}
        assert after == before
        four_weeks = s.scalar(select(ReportCell).where(ReportCell.window == 4, ReportCell.iso_week == WEEK, ReportCell.group_kind == "org"))
        assert four_weeks.participants == len(everyone)
    # the release log follows the people: last week's Blue set is recognised, the one-person change is refused
    record(db, tenant, [add_blue(db, tenant, boss)], week=WEEK)
    build(db, tenant)
    cells = _cells(client.get(f"/api/v1/reports?period={WEEK}&measure=pulse&group=team:Sales/Blue", headers=tenant.headers))
    assert cells[("team:Sales/Blue", None)]["reason"] == "would reveal a small difference from an earlier report"
    missing = cli("rotate-key", "--org", "99999")
    assert missing.exit_code == 1 and "not found" in missing.output


def add_blue(db, tenant, boss_id):  # noqa: ANN001
    with db.session(tenant.org_id) as s:
        return add_employee(s, team="Blue", manager=s.get(Employee, boss_id)).id


def test_people_who_changed_team_and_manager_count_once_per_group(db, tenant):
    boss, lead, people = build_org(db, tenant, sizes={"Blue": 6, "Green": 6})
    mover = people["Blue"][0]
    prev = shift_week(WEEK, -1)
    record(db, tenant, people["Blue"] + people["Green"], week=prev)
    with db.session(tenant.org_id) as s:  # moves from Blue (under the boss) to Green (under Lena)
        e = s.get(Employee, mover)
        e.team, e.manager_id = "Green", lead
    record(db, tenant, [mover, *people["Green"]], week=WEEK)
    build(db, tenant)
    with db.session(tenant.org_id) as s:
        cells = {(c.group_kind, c.group_key): (c.participants, c.respondents, c.pulse_answers)
                 for c in s.scalars(select(ReportCell).where(ReportCell.window == 4, ReportCell.iso_week == WEEK))}
        boss_line, lead_line = activity.pseudonym(s, boss), activity.pseudonym(s, lead)
        sets = reports.member_sets(s, 4, WEEK, lambda name: name == "all")
    # in each team they belonged to, once in the department, the organisation and the boss's line
    assert cells[("team", "Sales/Blue")] == (6, 6, 6)
    assert cells[("team", "Sales/Green")] == (7, 7, 13)
    assert cells[("department", "Sales")] == (12, 12, 19)
    assert cells[("org", "")] == (12, 12, 19)
    assert cells[("line", boss_line)] == (12, 12, 19)
    assert cells[("line", lead_line)] == (7, 7, 13)
    # the member sets the anonymity engine sees agree with the counts
    for (kind, key), (participants, _, _) in cells.items():
        assert len(sets[(kind, key, "all")]) == participants, (kind, key)


def _cells_from_raw_events(session, window, week):  # noqa: ANN001, ANN202
    """Every cell's measures computed the plain way, in Python from the raw events of the
    period: each event counts in its own groups (its department, team and every line above
    its manager in the period's tree), each person once per group."""
    from collections import defaultdict

    weeks = [shift_week(week, -i) for i in range(window)]
    ancestors = reports._line_ancestors(session, window, week)
    people = defaultdict(lambda: defaultdict(lambda: {"kinds": set(), "pulse_sum": 0, "answers": 0, "attendances": 0}))
    for e in session.scalars(select(ActivityEvent).where(ActivityEvent.iso_week.in_(weeks))):
        groups = [("org", ""), ("department", e.department)]
        if e.team:
            groups.append(("team", f"{e.department}/{e.team}"))
        if e.manager:
            groups += [("line", line) for line in ancestors(e.manager)]
        for group in groups:
            person = people[group][e.pseudonym]
            person["kinds"].add(e.kind)
            if e.kind == "pulse_answered":
                person["pulse_sum"] += e.score
                person["answers"] += 1
            person["attendances"] += e.kind == "session_attended"

    def did(members, kind):  # noqa: ANN001, ANN202
        return sum(kind in p["kinds"] for p in members)

    return {group: (len(m), did(m.values(), "digest_delivered"), did(m.values(), "digest_clicked"),
                    did(m.values(), "pulse_answered"), sum(p["pulse_sum"] for p in m.values()),
                    sum(p["answers"] for p in m.values()), did(m.values(), "article_read"),
                    did(m.values(), "program_enrolled"), sum(p["attendances"] for p in m.values()),
                    did(m.values(), "program_completed"))
            for group, m in people.items()}


def test_every_cell_equals_a_plain_computation_from_the_raw_events(db, tenant, other_tenant):
    _scenario(db, tenant)
    _scenario(db, other_tenant)  # noise in another organisation
    boss, lead, people = build_org(db, tenant, sizes={"Blue": 4, "Green": 3})
    mover = people["Blue"][0]
    record(db, tenant, people["Blue"] + people["Green"], week=shift_week(WEEK, -9), kind="session_attended", program_id=2)
    record(db, tenant, people["Blue"], week=shift_week(WEEK, -2), kind="article_read", topic="sleep")
    with db.session(tenant.org_id) as s:  # moves to Green, under Lena
        e = s.get(Employee, mover)
        e.team, e.manager_id = "Green", lead
    record(db, tenant, [mover, *people["Green"]], week=WEEK, score=2)
    record(db, tenant, [mover], week=WEEK, kind="session_attended", program_id=2)
    build(db, tenant)
    with db.session(tenant.org_id) as s:
        for window in reports.WINDOWS:
            expected = _cells_from_raw_events(s, window, WEEK)
            got = {(c.group_kind, c.group_key): (c.participants, c.delivered, c.clicked, c.respondents, c.pulse_sum,
                                                 c.pulse_answers, c.readers, c.enrolments, c.attendances, c.completions)
                   for c in s.scalars(select(ReportCell).where(ReportCell.window == window, ReportCell.iso_week == WEEK))}
            assert got == expected, window
            assert len([g for g in got if g[0] == "line"]) == 4  # both managers of each org tree


def test_every_cell_over_more_weeks_than_one_bitmask_holds(db, tenant):
    """The build finds where each person's runs of weeks start and end from bitmasks of at most
    reports.WEEK_BITS weeks, so a build over more weeks works in overlapping blocks: every cell
    of every week still equals the plain computation, with people active across the blocks'
    edges and gaps just under, at and over each window's length."""
    _, _, people = build_org(db, tenant, sizes={"Blue": 3, "Green": 3})
    blue, green = people["Blue"], people["Green"]
    weeks = [shift_week(WEEK, -i) for i in range(reports.WEEK_BITS + 30)]
    for i, week in enumerate(weeks):
        if i % 3 == 0:
            record(db, tenant, blue[:1], week=week, score=1 + i % 5)
        if i % 13 in (0, 4):
            record(db, tenant, blue[1:2], week=week, kind="article_read", topic="sleep")
        if i % 12 == 0 or i % 11 == 5:
            record(db, tenant, green[:1], week=week, kind="digest_clicked")
        if i % 5 == 2:
            record(db, tenant, [blue[2], green[1]], week=week, kind="session_attended", program_id=1)
    build(db, tenant, weeks)
    with db.session(tenant.org_id) as s:
        for window in reports.WINDOWS:
            for week in weeks:
                expected = _cells_from_raw_events(s, window, week)
                got = {(c.group_kind, c.group_key): (c.participants, c.delivered, c.clicked, c.respondents, c.pulse_sum,
                                                     c.pulse_answers, c.readers, c.enrolments, c.attendances, c.completions)
                       for c in s.scalars(select(ReportCell).where(ReportCell.window == window, ReportCell.iso_week == week))}
                assert got == expected, (window, week)


@pytest.mark.skipif(TEST_DB != "postgresql", reason="SQLite serialises writers; the insert race needs concurrent transactions")
def test_concurrent_first_reads_share_one_settings_row(db, tenant):
    """Two requests that both find no report settings yet: the second insert waits for the
    first, fails on the unique org_id, and reads the winner's row instead of failing (409)."""
    first = db.open(tenant.org_id)
    try:
        created = activity.report_settings(first)  # inserted, not yet committed
        seen: list = []

        def second_request() -> None:
            with db.session(tenant.org_id) as session:
                seen.append(activity.report_settings(session).id)

        racer = threading.Thread(target=second_request)
        racer.start()
        racer.join(timeout=1)
        assert racer.is_alive(), "the second insert should wait for the first transaction"
        first.commit()
        racer.join(timeout=30)
        assert seen == [created.id]
    finally:
        first.close()
    with db.session(tenant.org_id) as session:
        assert session.scalar(select(func.count()).select_from(ReportSettings)) == 1
