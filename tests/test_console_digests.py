"""The console's Digests page: preview, start a run, progress JSON, retry, pause (with CSRF)."""
from __future__ import annotations

import re


from shared.domain import digests
from shared.models import Role
from tests.conftest import form_token, login_console
from tests.digest_support import add_article, add_employees


def test_digests_page_preview_run_progress_and_pause(client, db, tenant):
    (employee_id, _) = add_employees(db, tenant.org_id, 2)
    add_article(db, tenant.org_id, "Walk at lunchtime")
    login_console(client, tenant.admin_email)
    page = client.get(f"/console/digests?employee_id={employee_id}&week=2026-W48")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Walk at lunchtime" in html and 'data-testid="digest-preview"' in html
    assert "<script>" not in html  # CSP: scripts only from static files
    preview = client.get(f"/console/digests/preview.html?employee_id={employee_id}&week=2026-W48")
    assert preview.status_code == 200 and "default-src 'none'" in preview.headers["Content-Security-Policy"]

    assert client.post("/console/digests/runs", data={"week": "2026-W48"}).status_code in (302, 400)  # no CSRF token: refused
    assert client.get("/api/v1/digests/runs", headers=tenant.headers).get_json()["total"] == 0
    token = form_token(client, "/console/digests")
    started = client.post("/console/digests/runs", data={"week": "2026-W48", "csrf_token": token})
    assert started.status_code == 302
    run_id = int(re.search(r"/console/digests/runs/(\d+)", started.headers["Location"]).group(1))
    run_page = client.get(f"/console/digests/runs/{run_id}").get_data(as_text=True)
    assert "digest_progress.js" in run_page and "2 queued" in run_page
    status = client.get(f"/console/digests/runs/{run_id}.json").get_json()
    assert status["counts"]["queued"] == 2 and status["status"] == "running"

    token = form_token(client, "/console/digests")
    assert client.post("/console/digests/pause", data={"paused": "1", "csrf_token": token}).status_code == 302
    with db.session(tenant.org_id) as session:
        assert digests.get_settings(session).paused is True
    assert "paused" in client.get("/console/digests").get_data(as_text=True)


def test_digests_page_is_for_hr_admins_and_own_runs_only(client, db, tenant, other_tenant, make_user):
    add_employees(db, other_tenant.org_id, 1)
    run = client.post("/api/v1/digests/runs", json={}, headers=other_tenant.headers).get_json()
    login_console(client, tenant.admin_email)
    assert client.get(f"/console/digests/runs/{run['id']}").status_code == 404
    assert client.get(f"/console/digests/runs/{run['id']}.json").status_code == 404
    client.get("/console/logout")
    manager = make_user(tenant, Role.MANAGER)
    other = client.application.test_client()
    login_console(other, manager.admin_email)
    assert other.get("/console/digests").status_code == 403
