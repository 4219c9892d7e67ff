"""HRIS CSV import: every error kind with its line and column, the three modes,
idempotent re-import, full sync, BOM, the CLI and the Celery job path."""
from __future__ import annotations

import io
import time

import pytest
from sqlalchemy import func, select

from shared.models import AuditEvent, Employee, Role

API = "/api/v1"
HEADER = "external_id,email,first_name,last_name,department,team,manager_external_id,timezone"
GOOD = [
    "E1,ann@example.com,Ann,Archer,Eng,Core,,Europe/London",
    "E2,bob@example.com,Bob,Baker,Eng,Core,E1,Europe/Paris",
    "E3,cy@example.com,Cy,Cole,Sales,North,E1,America/New_York",
]


def csv_bytes(*rows: str, header: str = HEADER, bom: bool = False) -> bytes:
    text = "\r\n".join([header, *rows]) + "\r\n"
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode()


def upload(client, tenant, data: bytes, **params):  # noqa: ANN001
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return client.post(f"{API}/employees/import?{query}", data={"file": (io.BytesIO(data), "hris.csv")},
                       headers=tenant.headers, content_type="multipart/form-data")


def count(db, tenant) -> int:  # noqa: ANN001
    with db.session(tenant.org_id) as session:
        return session.scalar(select(func.count()).select_from(Employee))


def snapshot(db, tenant) -> list[tuple]:  # noqa: ANN001
    with db.session(tenant.org_id) as session:
        return [
            (e.external_id, e.email, e.first_name, e.last_name, e.department, e.team, e.manager_id, e.timezone, e.status.value, e.updated_at)
            for e in session.scalars(select(Employee).order_by(Employee.external_id))
        ]


def test_import_creates_employees_with_managers(client, tenant, db):
    response = upload(client, tenant, csv_bytes(*GOOD))
    assert response.status_code == 201, response.get_json()
    report = response.get_json()
    assert report["status"] == "done" and report["applied"] is True
    assert (report["rows_total"], report["created"], report["updated"], report["unchanged"], report["error_rows"]) == (3, 3, 0, 0, 0)
    with db.session(tenant.org_id) as session:
        people = {e.external_id: e for e in session.scalars(select(Employee))}
        assert people["E2"].manager_id == people["E1"].id and people["E3"].manager_id == people["E1"].id
        assert people["E1"].manager_id is None
    assert client.get(f"{API}/employees/import/{report['id']}", headers=tenant.headers).get_json()["created"] == 3


def test_forward_manager_reference_and_bom(client, tenant, db):
    rows = ["E2,bob@example.com,Bob,Baker,Eng,Core,E1,UTC", "E1,ann@example.com,Ann,Archer,Eng,Core,,UTC"]
    report = upload(client, tenant, csv_bytes(*rows, bom=True)).get_json()
    assert report["created"] == 2 and report["errors"] == []
    with db.session(tenant.org_id) as session:
        people = {e.external_id: e for e in session.scalars(select(Employee))}
        assert people["E2"].manager_id == people["E1"].id


BAD_FILE = [
    "E1,ann@example.com,Ann,Archer,Eng,Core,,Europe/London",   # line 2 ok
    "E2,not-an-email,Bob,Baker,Eng,Core,,UTC",                 # line 3 bad email
    "E3,cy@example.com,Cy,Cole,Eng,Core,,Mars/Olympus",        # line 4 unknown timezone
    "E1,ann2@example.com,Ann,Again,Eng,Core,,UTC",             # line 5 duplicate external_id
    "E5,ANN@example.com,Eve,Evans,Eng,Core,,UTC",              # line 6 duplicate email (case-insensitive)
    "E6,f@example.com,Fay,Fox,Eng,Core,NOBODY,UTC",            # line 7 manager not found
    "E7,g@example.com,Gus,Gray,Eng,Core,E8,UTC",               # line 8 manager cycle
    "E8,h@example.com,Hal,Hill,Eng,Core,E7,UTC",               # line 9 manager cycle
    "E9,i@example.com,,Irwin,Eng,Core,,UTC",                   # line 10 missing first name
    "E10,j@example.com," + "J" * 101 + ",Jones,Eng,Core,,UTC",  # line 11 over-long first name
    "E11,k@example.com,Kim,King,Eng,Core,,UTC,extra",          # line 12 wrong field count
    "E12,l@example.com,Lee,Long,Eng,Core,E1,UTC",              # line 13 ok (manager in file)
]
EXPECTED_ERRORS = [
    (3, "email", "bad_email"),
    (4, "timezone", "unknown_timezone"),
    (5, "external_id", "duplicate_in_file"),
    (6, "email", "duplicate_in_file"),
    (7, "manager_external_id", "manager_not_found"),
    (8, "manager_external_id", "manager_cycle"),
    (9, "manager_external_id", "manager_cycle"),
    (10, "first_name", "missing_required_field"),
    (11, "first_name", "over_long_field"),
    (12, None, "bad_row"),
]


def test_every_error_kind_reported_with_line_and_column(client, tenant, db):
    report = upload(client, tenant, csv_bytes(*BAD_FILE), mode="partial").get_json()
    assert [(e["line"], e["column"], e["kind"]) for e in report["errors"]] == EXPECTED_ERRORS
    assert report["error_rows"] == 10 and report["created"] == 2 and report["applied"] is True
    # Messages never echo the bad value (the job row outlives an erasure).
    assert all("not-an-email" not in e["message"] for e in report["errors"])
    with db.session(tenant.org_id) as session:
        assert sorted(session.scalars(select(Employee.external_id))) == ["E1", "E12"]


def test_manager_row_with_errors_cascades(client, tenant):
    rows = ["E1,bad,Ann,Archer,Eng,Core,,UTC", "E2,bob@example.com,Bob,Baker,Eng,Core,E1,UTC"]
    report = upload(client, tenant, csv_bytes(*rows)).get_json()
    assert [(e["line"], e["kind"]) for e in report["errors"]] == [(2, "bad_email"), (3, "manager_not_found")]


def test_cycle_through_existing_employees_rejected(client, tenant, db):
    upload(client, tenant, csv_bytes("E1,ann@example.com,Ann,Archer,Eng,Core,,UTC", "E2,bob@example.com,Bob,Baker,Eng,Core,E1,UTC"))
    # E1 now reports to E2, who (in the database) reports to E1.
    report = upload(client, tenant, csv_bytes("E1,ann@example.com,Ann,Archer,Eng,Core,E2,UTC")).get_json()
    assert [(e["line"], e["kind"]) for e in report["errors"]] == [(2, "manager_cycle")]
    with db.session(tenant.org_id) as session:
        assert session.scalar(select(Employee.manager_external_id).where(Employee.external_id == "E1")) is None


def test_email_taken_by_existing_employee(client, tenant):
    upload(client, tenant, csv_bytes(*GOOD))
    report = upload(client, tenant, csv_bytes("E9,ANN@example.com,Ann,Other,Eng,Core,,UTC")).get_json()
    assert [(e["line"], e["column"], e["kind"]) for e in report["errors"]] == [(2, "email", "email_taken")]


def test_header_checked_first(client, tenant, db):
    report = upload(client, tenant, csv_bytes(*GOOD, header="external_id,email,first_name,last_name,team,timezone")).get_json()
    assert report["errors"][0]["line"] == 1 and report["errors"][0]["kind"] == "bad_header"
    assert "department" in report["errors"][0]["message"]
    assert report["applied"] is False and count(db, tenant) == 0
    unknown = upload(client, tenant, csv_bytes(*GOOD, header=HEADER + ",salary")).get_json()
    assert unknown["errors"][0]["kind"] == "bad_header" and unknown["errors"][0]["column"] == "salary"


def test_not_utf8_reported(client, tenant, db):
    data = csv_bytes(*GOOD) + "E4,z@example.com,Zo\xe9,Z,Eng,Core,,UTC\r\n".encode("latin-1")
    report = upload(client, tenant, data).get_json()
    assert report["errors"][-1]["kind"] == "bad_encoding" and report["errors"][-1]["line"] == 5
    assert count(db, tenant) == 0


def test_atomic_leaves_database_unchanged(client, tenant, db):
    upload(client, tenant, csv_bytes(*GOOD))
    before = snapshot(db, tenant)
    rows = ["E1,ann@example.com,Ann,Changed,Eng,Core,,UTC", "E4,new@example.com,New,Person,Eng,Core,,UTC", "E5,broken,X,Y,Eng,Core,,UTC"]
    report = upload(client, tenant, csv_bytes(*rows), mode="atomic").get_json()
    assert report["applied"] is False and report["error_rows"] == 1 and report["errors"][0]["line"] == 4
    assert snapshot(db, tenant) == before
    good = upload(client, tenant, csv_bytes(*rows[:2]), mode="atomic").get_json()
    assert good["applied"] is True and (good["created"], good["updated"]) == (1, 1)


def test_dry_run_reports_without_writing(client, tenant, db):
    report = upload(client, tenant, csv_bytes(*GOOD, "E4,bad,X,Y,Eng,Core,,UTC"), dry_run="true").get_json()
    assert report["mode"] == "dry_run" and report["applied"] is False
    assert report["created"] == 3 and report["error_rows"] == 1
    assert count(db, tenant) == 0


def test_reimport_is_a_noop(client, tenant, db):
    upload(client, tenant, csv_bytes(*GOOD))
    before = snapshot(db, tenant)
    with db.session(tenant.org_id) as session:
        audits = session.scalar(select(func.count()).select_from(AuditEvent))
    report = upload(client, tenant, csv_bytes(*GOOD)).get_json()
    assert (report["created"], report["updated"], report["unchanged"]) == (0, 0, 3)
    assert snapshot(db, tenant) == before
    with db.session(tenant.org_id) as session:
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == audits
    changed = upload(client, tenant, csv_bytes(GOOD[0], GOOD[1].replace("Baker", "Butcher"), GOOD[2])).get_json()
    assert (changed["created"], changed["updated"], changed["unchanged"]) == (0, 1, 2)
    with db.session(tenant.org_id) as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "employee.updated")).one()
        assert event.details["fields"] == ["last_name"]


def test_full_sync_marks_missing_as_left(client, tenant, db):
    upload(client, tenant, csv_bytes(*GOOD))
    report = upload(client, tenant, csv_bytes(*GOOD[:2]), mark_missing_as_left="true").get_json()
    assert report["marked_left"] == 1
    with db.session(tenant.org_id) as session:
        status = dict(session.execute(select(Employee.external_id, Employee.status)).all())
    assert status["E3"].value == "left" and status["E1"].value == "active"
    # Without the flag, absence changes nothing.
    assert upload(client, tenant, csv_bytes(GOOD[0])).get_json()["marked_left"] == 0


def test_digest_opt_in_column_records_consent(client, tenant, db):
    header = HEADER + ",locale,digest_opt_in"
    report = upload(client, tenant, csv_bytes("E1,ann@example.com,Ann,A,Eng,Core,,UTC,en-GB,no", "E2,bob@example.com,Bob,B,Eng,Core,,UTC,de-DE,maybe",
                                              header=header)).get_json()
    assert [(e["line"], e["kind"]) for e in report["errors"]] == [(3, "bad_value")]
    with db.session(tenant.org_id) as session:
        ann = session.scalars(select(Employee)).one()
        assert ann.digest_consent is False and ann.locale == "en-GB"
    emp = client.get(f"{API}/employees", headers=tenant.headers).get_json()["items"][0]
    consents = client.get(f"{API}/employees/{emp['id']}/consents", headers=tenant.headers).get_json()["items"]
    assert [(c["kind"], c["granted"], c["source"]) for c in consents] == [("digest_emails", False, "import")]


def test_text_csv_body_and_roles(client, tenant, make_user):
    response = client.post(f"{API}/employees/import", data=csv_bytes(*GOOD), headers={**tenant.headers, "Content-Type": "text/csv"})
    assert response.status_code == 201 and response.get_json()["created"] == 3
    manager = make_user(tenant, Role.MANAGER)
    assert upload(client, manager, csv_bytes(*GOOD)).status_code == 403


def test_job_status_is_tenant_scoped(client, tenant, other_tenant):
    job = upload(client, other_tenant, csv_bytes(*GOOD)).get_json()
    assert client.get(f"{API}/employees/import/{job['id']}", headers=tenant.headers).status_code == 404


def test_large_file_runs_as_celery_job(client, tenant, db, celery_worker):
    rows = [f"E{i},p{i}@example.com,P{i},L{i},Eng,T{i % 7},{'E0' if i else ''},UTC" for i in range(2500)]
    rows.append("E9999,broken,X,Y,Eng,Core,,UTC")
    response = upload(client, tenant, csv_bytes(*rows))
    assert response.status_code == 202
    job = response.get_json()
    assert job["status"] == "queued" and response.headers["Location"].endswith(f"/employees/import/{job['id']}")
    deadline = time.time() + 60
    while time.time() < deadline:
        job = client.get(f"{API}/employees/import/{job['id']}", headers=tenant.headers).get_json()
        if job["status"] in ("done", "failed"):
            break
        time.sleep(0.2)
    assert job["status"] == "done", job
    assert (job["rows_total"], job["rows_done"], job["created"], job["error_rows"]) == (2501, 2501, 2500, 1)
    assert job["errors"][0]["line"] == 2502
    assert count(db, tenant) == 2500
    from shared.models import ImportChunk

    with db.session(tenant.org_id) as session:
        assert session.scalar(select(func.count()).select_from(ImportChunk)) == 0


def test_cli_import(tenant, settings, db, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from services.cli import main

    for key, value in (("DATABASE_URL", settings.database_url), ("BROKER_URL", "memory://"), ("SECRET_KEY", settings.secret_key)):
        monkeypatch.setenv(key, value)
    path = tmp_path / "hris.csv"
    path.write_bytes(csv_bytes(*GOOD, "E4,bad,X,Y,Eng,Core,,UTC"))
    runner = CliRunner()
    dry = runner.invoke(main, ["employees", "import", "--org", str(tenant.org_id), str(path), "--dry-run"])
    assert dry.exit_code == 1 and "line 5" in dry.output and "bad_email" in dry.output
    assert count(db, tenant) == 0
    atomic = runner.invoke(main, ["employees", "import", "--org", str(tenant.org_id), str(path), "--atomic"])
    assert atomic.exit_code == 1 and count(db, tenant) == 0
    partial = runner.invoke(main, ["employees", "import", "--org", str(tenant.org_id), str(path)])
    assert partial.exit_code == 1 and "created 3" in partial.output
    assert count(db, tenant) == 3
    path.write_bytes(csv_bytes(*GOOD))
    again = runner.invoke(main, ["employees", "import", "--org", str(tenant.org_id), str(path)])
    assert again.exit_code == 0 and "unchanged 3" in again.output


@pytest.mark.parametrize("mode", ["partial", "atomic"])
def test_import_does_not_touch_other_tenant(client, tenant, other_tenant, db, mode):
    upload(client, other_tenant, csv_bytes(*GOOD))
    report = upload(client, tenant, csv_bytes(*GOOD), mode=mode, mark_missing_as_left="true").get_json()
    assert report["created"] == 3 and report["marked_left"] == 0
    assert count(db, other_tenant) == 3 and count(db, tenant) == 3


TRICKY_EMAILS = [
    "a@b.co", "first.last+tag@sub.example.org", "x@b.c", "x@-bad.com", "x@bad-.com", "x@ok-host.io", "no-at-sign.com",
    "two@@example.com", "sp ace@example.com", "x@" + "l" * 63 + ".com", "x@" + "l" * 64 + ".com", "x@example." + "t" * 63,
    "x@example." + "t" * 64, "x@example.c0m", "x@example.com.", "x@.example.com", "o'brien@example.ie", "{weird}@example.com",
    "x@exa_mple.com", "y" * 240 + "@example.com", "y" * 250 + "@example.com",
]


def test_email_check_in_sql_matches_the_python_pattern(client, tenant):
    """The import checks emails in SQL (split for PostgreSQL's regex engine); it must accept
    exactly what shared.domain.employee_import.is_valid_email accepts."""
    from shared.domain.employee_import import is_valid_email

    rows = [f"E{i},{email},F,L,Eng,Core,,UTC" for i, email in enumerate(TRICKY_EMAILS)]
    report = upload(client, tenant, csv_bytes(*rows), dry_run="true").get_json()
    rejected = {e["line"] - 2 for e in report["errors"] if e["kind"] == "bad_email"}
    assert rejected == {i for i, email in enumerate(TRICKY_EMAILS) if not is_valid_email(email)}
    assert 0 < len(rejected) < len(TRICKY_EMAILS)


def test_cells_are_trimmed_and_blank_lines_skipped(client, tenant, db):
    data = csv_bytes(" E1 , Ann@Example.com ,Ann,Archer,Eng,Core,, Europe/London ", "", "E2,bob@example.com,Bob,Baker,Eng,Core, E1 ,")
    report = upload(client, tenant, data).get_json()
    assert (report["created"], report["error_rows"]) == (2, 0), report
    with db.session(tenant.org_id) as session:
        people = {e.external_id: e for e in session.scalars(select(Employee))}
    assert people["E1"].email == "ann@example.com" and people["E1"].timezone == "Europe/London"
    assert people["E2"].manager_id == people["E1"].id and people["E2"].timezone == "UTC"


def test_quoted_cells_with_newlines_keep_their_line_numbers(client, tenant):
    data = csv_bytes('E1,ann@example.com,"Ann\r\nMarie",Archer,Eng,Core,,UTC', "E2,broken,Bob,Baker,Eng,Core,,UTC")
    report = upload(client, tenant, data).get_json()
    assert [(e["line"], e["kind"]) for e in report["errors"]] == [(4, "bad_email")]
    assert report["created"] == 1


def test_long_cycle_and_its_tail_through_existing_employees(client, tenant, db):
    """A cycle closed through existing employees: only its members are rejected; the row
    hanging below it keeps its place when its manager still exists."""
    upload(client, tenant, csv_bytes(*(f"E{i},e{i}@example.com,F,L,Eng,Core,{f'E{i - 1}' if i else ''},UTC" for i in range(5))))
    # E0 now reports to E4 (closing E0 <- E1 <- ... <- E4); E9 is new and reports to E2.
    report = upload(client, tenant, csv_bytes("E0,e0@example.com,F,L,Eng,Core,E4,UTC", "E9,e9@example.com,F,L,Eng,Core,E2,UTC")).get_json()
    assert [(e["line"], e["kind"]) for e in report["errors"]] == [(2, "manager_cycle")]
    assert report["created"] == 1
    with db.session(tenant.org_id) as session:
        links = dict(session.execute(select(Employee.external_id, Employee.manager_external_id)).all())
    assert links["E0"] is None and links["E9"] == "E2"


def test_cycle_closed_by_an_unchanged_link_is_rejected(client, tenant, db):
    """Both new links point to a row higher up the file, but M's unchanged link to X (a
    later row) closes the cycle A -> M -> X -> A: the walk must still run."""
    upload(client, tenant, csv_bytes("X,x@example.com,F,L,Eng,Core,,UTC", "M,m@example.com,F,L,Eng,Core,X,UTC"))
    rows = ["M,m@example.com,F,L,Eng,Core,X,UTC", "A,a@example.com,F,L,Eng,Core,M,UTC", "X,x@example.com,F,L,Eng,Core,A,UTC"]
    report = upload(client, tenant, csv_bytes(*rows)).get_json()
    assert [(e["line"], e["kind"]) for e in report["errors"]] == [(2, "manager_cycle"), (3, "manager_cycle"), (4, "manager_cycle")]
    with db.session(tenant.org_id) as session:
        links = dict(session.execute(select(Employee.external_id, Employee.manager_external_id)).all())
    assert links == {"X": None, "M": "X"}


def test_atomic_manager_changes_and_new_managers_link_by_id(client, tenant, db):
    upload(client, tenant, csv_bytes(*GOOD))
    rows = [GOOD[0], GOOD[1].replace(",E1,", ",E4,"), GOOD[2], "E4,dee@example.com,Dee,Dean,Eng,Core,E1,UTC"]
    report = upload(client, tenant, csv_bytes(*rows), mode="atomic").get_json()
    assert (report["created"], report["updated"], report["unchanged"], report["applied"]) == (1, 1, 2, True)
    with db.session(tenant.org_id) as session:
        people = {e.external_id: e for e in session.scalars(select(Employee))}
        assert people["E2"].manager_id == people["E4"].id and people["E4"].manager_id == people["E1"].id
        fields = session.scalars(select(AuditEvent.details).where(AuditEvent.action == "employee.updated")).one()["fields"]
    assert fields == ["manager_external_id"]
