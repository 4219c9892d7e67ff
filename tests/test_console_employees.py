"""Console pages for employees and programs: roles, tenant isolation, forms with CSRF,
the import job page and its JSON status route."""
from __future__ import annotations

import io


from shared.models import Role
from tests.conftest import form_token, login_console

API = "/api/v1"
CSV = (
    "external_id,email,first_name,last_name,department,team,manager_external_id,timezone\r\n"
    "E1,ann@example.com,Ann,Archer,Eng,Core,,Europe/London\r\n"
    "E2,bad-email,Bob,Baker,Eng,Core,E1,UTC\r\n"
)


def login(client, email):  # noqa: ANN001
    assert login_console(client, email).status_code == 302


def test_employee_list_detail_and_offboarding(client, tenant):
    for n, dept in ((1, "Eng"), (2, "Sales")):
        body = {"external_id": f"E{n}", "email": f"p{n}@example.com", "first_name": f"Name{n}", "last_name": "Person", "department": dept}
        client.post(f"{API}/employees", json=body, headers=tenant.headers)
    login(client, tenant.admin_email)
    html = client.get("/console/employees?department=Sales").get_data(as_text=True)
    assert "Name2" in html and "Name1" not in html
    html = client.get("/console/employees?q=name1").get_data(as_text=True)
    assert "Name1" in html and "Name2" not in html
    emp_id = client.get(f"{API}/employees?q=name1", headers=tenant.headers).get_json()["items"][0]["id"]
    detail = client.get(f"/console/employees/{emp_id}")
    assert detail.status_code == 200 and "Audit history" in detail.get_data(as_text=True) and "employee.created" in detail.get_data(as_text=True)
    token = form_token(client, f"/console/employees/{emp_id}")
    assert client.post(f"/console/employees/{emp_id}/status", data={"status": "left"}).status_code == 400  # no CSRF token
    response = client.post(f"/console/employees/{emp_id}/status", data={"status": "left", "csrf_token": token})
    assert response.status_code == 302
    assert client.get(f"{API}/employees/{emp_id}", headers=tenant.headers).get_json()["status"] == "left"


def test_console_roles_and_tenant_isolation(client, tenant, other_tenant, make_user):
    body = {"external_id": "X1", "email": "x@example.com", "first_name": "X", "last_name": "Y"}
    theirs = client.post(f"{API}/employees", json=body, headers=other_tenant.headers).get_json()
    their_program = client.post(f"{API}/programs", json={"name": "Theirs"}, headers=other_tenant.headers).get_json()
    their_job = client.post(f"{API}/employees/import", data=CSV.encode(), headers={**other_tenant.headers, "Content-Type": "text/csv"}).get_json()
    login(client, tenant.admin_email)
    for path in (f"/console/employees/{theirs['id']}", f"/console/programs/{their_program['id']}",
                 f"/console/employees/import/{their_job['id']}", f"/console/employees/import/{their_job['id']}/status.json"):
        assert client.get(path).status_code == 404, path
    manager = make_user(tenant, Role.MANAGER)
    client.post("/console/logout", data={"csrf_token": form_token(client, "/console/")})
    login(client, manager.admin_email)
    for path in ("/console/employees", "/console/programs", "/console/employees/import"):
        assert client.get(path).status_code == 403, path


def test_import_page_queues_job_and_reports(client, tenant, celery_worker):
    import time

    login(client, tenant.admin_email)
    token = form_token(client, "/console/employees/import")
    response = client.post("/console/employees/import", data={"csrf_token": token, "mode": "partial", "file": (io.BytesIO(CSV.encode()), "hris.csv")},
                           content_type="multipart/form-data")
    assert response.status_code == 302
    job_url = response.headers["Location"]
    status_url = job_url + "/status.json"
    deadline = time.time() + 30
    status = client.get(status_url).get_json()
    while not status["terminal"] and time.time() < deadline:
        time.sleep(0.2)
        status = client.get(status_url).get_json()
    assert status["status"] == "done" and (status["rows_total"], status["created"], status["error_rows"]) == (2, 1, 1)
    html = client.get(job_url).get_data(as_text=True)
    assert 'id="import-errors"' in html and "bad email" in html and "<td>3</td>" in html


def test_programs_pages(client, tenant):
    for n in (1, 2):
        client.post(f"{API}/employees", json={"external_id": f"E{n}", "email": f"p{n}@example.com", "first_name": f"Name{n}", "last_name": "P"},
                    headers=tenant.headers)
    login(client, tenant.admin_email)
    token = form_token(client, "/console/programs")
    response = client.post("/console/programs", data={"csrf_token": token, "name": "Yoga", "capacity": "1", "status": "open", "topics": "Movement"})
    assert response.status_code == 302
    detail_url = response.headers["Location"]
    html = client.get(detail_url).get_data(as_text=True)
    token = form_token(client, detail_url)
    response = client.post(detail_url + "/enrol", data={"csrf_token": token, "enrol-external_ids": "E1, E2, NOPE"})
    assert response.status_code == 302
    html = client.get(detail_url).get_data(as_text=True)
    enrolled, waitlist = html.split('id="enrolled"')[1].split('id="waitlist"')
    assert "Name1" in enrolled and "Name2" not in enrolled and "Name2" in waitlist.split("</table>")[0]
    assert "NOPE" in html  # flashed as unknown
