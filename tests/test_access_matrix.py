"""The access-control matrix, generated from the URL map: every endpoint (API, console,
employee pages, probes) x every kind of caller, with the expected status of each cell
declared in one table, ``EXPECTED``. A new endpoint fails the test until its row is
added, and a row whose endpoint is gone fails too.

The callers, always aimed at resources of organisation A:

* ``anonymous``: no credentials (a cookie session of its own, with a CSRF token, so
  form posts are judged on access and not on CSRF).
* ``employee``: an employee of A holding genuine signed links for A (preference centre,
  unsubscribe, pulse, article), presented the way employee pages take them: in the path.
  Elsewhere it has no session and offers its preference link as a bearer token.
* ``manager``: a manager of A, signed in (console session; bearer token on the API).
* ``hr``: an HR admin of A, signed in.
* ``other_hr``: an HR admin of organisation B, signed in, using A's ids.

Callers other than the employee put a forged link (right payload, wrong key) where a
signed link goes. Every row gets fresh resources and fresh tokens, so a DELETE or a
logout in one row cannot change another. Console requests carry the cookie session,
API requests the bearer token. Bodies are empty (``{}`` or a form with only the CSRF
token) unless ``QUERIES`` or ``FORMS`` give what the action needs to go through: a 422
or 400 for the HR admin means it got past access control."""
from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from werkzeug.routing import Rule

from services.auth import DEFAULT_ROLES, PUBLIC_ENDPOINTS
from shared.domain import accounts, articles, digest_render, employees
from shared.models import Employee, Role
from tests.conftest import ADMIN_PASSWORD, login_console

API_PREFIX = "/api/v1"
CALLERS = ("anonymous", "employee", "manager", "hr", "other_hr")
FORGING_KEY = "not-the-secret-key-0123456789"

# "METHOD rule": expected status for (anonymous, employee, manager, hr, other_hr).
EXPECTED: dict[str, tuple[int, int, int, int, int]] = {
    # API (/api/v1): bearer tokens; HR admin only unless the view widens it. The employee offers its link as a token.
    "POST /api/v1/activity": (401, 401, 403, 422, 422),
    "GET /api/v1/articles": (401, 401, 403, 200, 200),
    "POST /api/v1/articles": (401, 401, 403, 422, 422),
    "DELETE /api/v1/articles/<int:article_id>": (401, 401, 403, 204, 404),
    "GET /api/v1/articles/<int:article_id>": (401, 401, 403, 200, 404),
    "PATCH /api/v1/articles/<int:article_id>": (401, 401, 403, 428, 404),
    "POST /api/v1/articles/<int:article_id>/archive": (401, 401, 403, 409, 404),
    "GET /api/v1/articles/<int:article_id>/history": (401, 401, 403, 200, 404),
    "GET /api/v1/articles/<int:article_id>/link": (401, 401, 403, 404, 404),
    "POST /api/v1/articles/<int:article_id>/publish": (401, 401, 403, 409, 404),
    "POST /api/v1/articles/<int:article_id>/reject": (401, 401, 403, 409, 404),
    "POST /api/v1/articles/<int:article_id>/restore": (401, 401, 403, 409, 404),
    "POST /api/v1/articles/<int:article_id>/submit": (401, 401, 403, 200, 404),
    "POST /api/v1/articles/import": (401, 401, 403, 422, 422),
    "DELETE /api/v1/auth/token": (401, 401, 204, 204, 204),
    "POST /api/v1/auth/token": (422, 422, 422, 422, 422),
    "GET /api/v1/auth/tokens": (401, 401, 200, 200, 200),
    "DELETE /api/v1/auth/tokens/<int:token_id>": (401, 401, 403, 204, 404),
    "POST /api/v1/digests/pause": (401, 401, 403, 200, 200),
    "GET /api/v1/digests/preview": (401, 401, 403, 200, 404),
    "POST /api/v1/digests/resume": (401, 401, 403, 200, 200),
    "GET /api/v1/digests/runs": (401, 401, 403, 200, 200),
    "POST /api/v1/digests/runs": (401, 401, 403, 201, 201),
    "GET /api/v1/digests/runs/<int:run_id>": (401, 401, 403, 200, 404),
    "GET /api/v1/digests/sends": (401, 401, 403, 200, 200),
    "GET /api/v1/digests/sends/<int:send_id>": (401, 401, 403, 200, 404),
    "POST /api/v1/digests/sends/<int:send_id>/retry": (401, 401, 403, 409, 404),
    "GET /api/v1/digests/settings": (401, 401, 403, 200, 200),
    "PATCH /api/v1/digests/settings": (401, 401, 403, 200, 200),
    "GET /api/v1/digests/suppressions": (401, 401, 403, 200, 200),
    "DELETE /api/v1/digests/suppressions/<int:suppression_id>": (401, 401, 403, 204, 404),
    "POST /api/v1/digests/test": (401, 401, 403, 202, 422),
    "GET /api/v1/docs": (200, 200, 200, 200, 200),
    "GET /api/v1/docs/assets/<path:filename>": (200, 200, 200, 200, 200),
    "GET /api/v1/employees": (401, 401, 403, 200, 200),
    "POST /api/v1/employees": (401, 401, 403, 422, 422),
    "DELETE /api/v1/employees/<int:employee_id>": (401, 401, 403, 204, 404),
    "GET /api/v1/employees/<int:employee_id>": (401, 401, 403, 200, 404),
    "PATCH /api/v1/employees/<int:employee_id>": (401, 401, 403, 200, 404),
    "GET /api/v1/employees/<int:employee_id>/consents": (401, 401, 403, 200, 404),
    "POST /api/v1/employees/<int:employee_id>/consents": (401, 401, 403, 422, 404),
    "GET /api/v1/employees/<int:employee_id>/export": (401, 401, 403, 200, 404),
    "GET /api/v1/employees/<int:employee_id>/preference-link": (401, 401, 403, 200, 404),
    "POST /api/v1/employees/<int:employee_id>/revoke-links": (401, 401, 403, 200, 404),
    "GET /api/v1/employees/export.csv": (401, 401, 403, 200, 200),
    "POST /api/v1/employees/import": (401, 401, 403, 422, 422),
    "GET /api/v1/employees/import/<int:job_id>": (401, 401, 403, 200, 404),
    "GET /api/v1/me": (401, 401, 200, 200, 200),
    "GET /api/v1/openapi.json": (200, 200, 200, 200, 200),
    "GET /api/v1/organisation": (401, 401, 200, 200, 200),
    "PATCH /api/v1/organisation": (401, 401, 403, 200, 200),
    "GET /api/v1/partners": (401, 401, 403, 200, 200),
    "POST /api/v1/partners": (401, 401, 403, 422, 422),
    "DELETE /api/v1/partners/<int:partner_id>": (401, 401, 403, 204, 404),
    "GET /api/v1/partners/<int:partner_id>": (401, 401, 403, 200, 404),
    "PATCH /api/v1/partners/<int:partner_id>": (401, 401, 403, 200, 404),
    "GET /api/v1/programs": (401, 401, 403, 200, 200),
    "POST /api/v1/programs": (401, 401, 403, 422, 422),
    "DELETE /api/v1/programs/<int:program_id>": (401, 401, 403, 204, 404),
    "GET /api/v1/programs/<int:program_id>": (401, 401, 403, 200, 404),
    "PATCH /api/v1/programs/<int:program_id>": (401, 401, 403, 200, 404),
    "GET /api/v1/programs/<int:program_id>/enrolment-events": (401, 401, 403, 200, 404),
    "GET /api/v1/programs/<int:program_id>/enrolments": (401, 401, 403, 200, 404),
    "POST /api/v1/programs/<int:program_id>/enrolments": (401, 401, 403, 422, 404),
    "DELETE /api/v1/programs/<int:program_id>/enrolments/<int:enrolment_id>": (401, 401, 403, 200, 404),
    "GET /api/v1/programs/<int:program_id>/enrolments/<int:enrolment_id>": (401, 401, 403, 200, 404),
    "GET /api/v1/programs/<int:program_id>/enrolments/export.csv": (401, 401, 403, 200, 404),
    "POST /api/v1/programs/<int:program_id>/enrolments/withdraw": (401, 401, 403, 422, 404),
    "GET /api/v1/programs/<int:program_id>/sessions": (401, 401, 403, 200, 404),
    "POST /api/v1/programs/<int:program_id>/sessions": (401, 401, 403, 422, 404),
    "GET /api/v1/programs/<int:program_id>/sessions/<int:session_id>": (401, 401, 403, 200, 404),
    "PATCH /api/v1/programs/<int:program_id>/sessions/<int:session_id>": (401, 401, 403, 200, 404),
    "DELETE /api/v1/programs/<int:program_id>/sessions/<int:session_id>": (401, 401, 403, 204, 404),
    "GET /api/v1/programs/<int:program_id>/sessions/<int:session_id>/attendance": (401, 401, 403, 200, 404),
    "POST /api/v1/programs/<int:program_id>/sessions/<int:session_id>/attendance": (401, 401, 403, 422, 404),
    "DELETE /api/v1/programs/<int:program_id>/sessions/<int:session_id>/attendance/<int:employee_id>": (401, 401, 403, 204, 404),
    "GET /api/v1/reports": (401, 401, 403, 200, 200),
    "POST /api/v1/reports/build": (401, 401, 403, 202, 202),
    "GET /api/v1/reports/export.csv": (401, 401, 403, 200, 200),
    "GET /api/v1/reports/settings": (401, 401, 403, 200, 200),
    "PATCH /api/v1/reports/settings": (401, 401, 403, 200, 200),
    "GET /api/v1/static/<path:filename>": (200, 200, 200, 200, 200),
    "GET /api/v1/topics": (401, 401, 403, 200, 200),
    "POST /api/v1/topics": (401, 401, 403, 422, 422),
    "DELETE /api/v1/topics/<int:topic_id>": (401, 401, 403, 204, 404),
    "GET /api/v1/users": (401, 401, 403, 200, 200),
    "POST /api/v1/users": (401, 401, 403, 422, 422),
    "GET /api/v1/users/<int:user_id>": (401, 401, 403, 200, 404),
    "PATCH /api/v1/users/<int:user_id>": (401, 401, 403, 200, 404),
    # Console: cookie session; 302 is the redirect to the sign-in page (or, for HR admins, after a form post).
    "GET /console/": (302, 302, 200, 200, 200),
    "GET /console/<area>": (302, 302, 403, 200, 200),
    "GET /console/articles": (302, 302, 403, 200, 200),
    "GET /console/articles/<int:article_id>": (302, 302, 403, 200, 404),
    "POST /console/articles/<int:article_id>/delete": (302, 302, 403, 302, 404),
    "GET /console/articles/<int:article_id>/edit": (302, 302, 403, 200, 404),
    "POST /console/articles/<int:article_id>/edit": (302, 302, 403, 400, 404),
    "GET /console/articles/<int:article_id>/history": (302, 302, 403, 200, 404),
    "POST /console/articles/<int:article_id>/transition": (302, 302, 403, 302, 404),
    "GET /console/articles/import": (302, 302, 403, 200, 200),
    "POST /console/articles/import": (302, 302, 403, 400, 400),
    "GET /console/articles/new": (302, 302, 403, 200, 200),
    "POST /console/articles/new": (302, 302, 403, 400, 400),
    "POST /console/articles/preview": (302, 302, 403, 200, 200),
    "GET /console/digests": (302, 302, 403, 200, 200),
    "POST /console/digests/pause": (302, 302, 403, 302, 302),
    "GET /console/digests/preview.html": (302, 302, 403, 200, 404),
    "POST /console/digests/runs": (302, 302, 403, 302, 302),
    "GET /console/digests/runs/<int:run_id>": (302, 302, 403, 200, 404),
    "GET /console/digests/runs/<int:run_id>.json": (302, 302, 403, 200, 404),
    "POST /console/digests/sends/<int:send_id>/retry": (302, 302, 403, 302, 404),
    "GET /console/employees": (302, 302, 403, 200, 200),
    "GET /console/employees/<int:employee_id>": (302, 302, 403, 200, 404),
    "POST /console/employees/<int:employee_id>/erase": (302, 302, 403, 302, 404),
    "POST /console/employees/<int:employee_id>/status": (302, 302, 403, 302, 404),
    "GET /console/employees/import": (302, 302, 403, 200, 200),
    "POST /console/employees/import": (302, 302, 403, 400, 400),
    "GET /console/employees/import/<int:job_id>": (302, 302, 403, 200, 404),
    "GET /console/employees/import/<int:job_id>/status.json": (302, 302, 403, 200, 404),
    "GET /console/invite/<token>": (200, 200, 200, 200, 200),
    "POST /console/invite/<token>": (200, 200, 200, 200, 200),
    "GET /console/login": (200, 200, 302, 302, 302),
    "POST /console/login": (400, 400, 302, 302, 302),
    "POST /console/logout": (302, 302, 302, 302, 302),
    "GET /console/mailbox": (302, 302, 404, 404, 404),
    "GET /console/mailbox/<key>": (302, 302, 404, 404, 404),
    "GET /console/partners": (302, 302, 403, 200, 200),
    "GET /console/partners/<int:partner_id>": (302, 302, 403, 200, 404),
    "POST /console/partners/<int:partner_id>": (302, 302, 403, 302, 404),
    "GET /console/partners/new": (302, 302, 403, 200, 200),
    "POST /console/partners/new": (302, 302, 403, 400, 400),
    "GET /console/programs": (302, 302, 403, 200, 200),
    "POST /console/programs": (302, 302, 403, 400, 400),
    "GET /console/programs/<int:program_id>": (302, 302, 403, 200, 404),
    "POST /console/programs/<int:program_id>": (302, 302, 403, 400, 404),
    "POST /console/programs/<int:program_id>/enrol": (302, 302, 403, 302, 404),
    "POST /console/programs/<int:program_id>/withdraw/<int:employee_id>": (302, 302, 403, 302, 404),
    "POST /console/programs/<int:program_id>/sessions": (302, 302, 403, 302, 404),  # invalid form: flashed on the program page
    "GET /console/programs/<int:program_id>/sessions/<int:session_id>": (302, 302, 403, 200, 404),
    "POST /console/programs/<int:program_id>/sessions/<int:session_id>/delete": (302, 302, 403, 302, 404),
    "POST /console/programs/<int:program_id>/sessions/<int:session_id>/attendance/<int:employee_id>": (302, 302, 403, 302, 404),
    "POST /console/programs/<int:program_id>/sessions/<int:session_id>/attendance/<int:employee_id>/remove": (302, 302, 403, 302, 404),
    "GET /console/reports": (302, 302, 200, 200, 200),
    "GET /console/settings": (302, 302, 403, 200, 200),
    "POST /console/settings": (302, 302, 403, 302, 302),
    "GET /console/static/<path:filename>": (200, 200, 200, 200, 200),
    "GET /console/topics": (302, 302, 403, 200, 200),
    "POST /console/topics": (302, 302, 403, 400, 400),
    "POST /console/topics/<int:topic_id>/delete": (302, 302, 403, 302, 404),
    "GET /console/users": (302, 302, 403, 200, 200),
    "POST /console/users": (302, 302, 403, 400, 400),
    "POST /console/users/<int:user_id>/active": (302, 302, 403, 302, 404),
    # Employee pages: only a genuine signed link opens them; a forged or missing one is 404 for everyone.
    "GET /a/<token>": (404, 200, 404, 404, 404),
    "GET /p/<token>": (404, 200, 404, 404, 404),
    "POST /p/<token>": (404, 302, 404, 404, 404),
    "POST /p/<token>/erase": (404, 302, 404, 404, 404),
    "POST /p/<token>/export": (404, 200, 404, 404, 404),
    "GET /p/<token>/privacy": (404, 200, 404, 404, 404),
    "GET /p/<token>/programs/<int:program_id>/enrol": (404, 200, 404, 404, 404),
    "POST /p/<token>/programs/<int:program_id>/enrol": (404, 302, 404, 404, 404),
    "POST /p/<token>/programs/<int:program_id>/withdraw": (404, 302, 404, 404, 404),
    "GET /pulse/<token>": (404, 200, 404, 404, 404),
    "GET /pulse/<token>/<int:score>": (404, 200, 404, 404, 404),
    "GET /u/<token>": (404, 200, 404, 404, 404),
    "POST /u/<token>": (404, 200, 404, 404, 404),
    # Probes, metrics (open unless METRICS_TOKEN is set), static files and the root redirect.
    "GET /": (302, 302, 302, 302, 302),
    "GET /healthz": (200, 200, 200, 200, 200),
    "GET /metrics": (200, 200, 200, 200, 200),
    "GET /readyz": (200, 200, 200, 200, 200),
    "GET /static/<path:filename>": (404, 404, 404, 404, 404),
}


# ---------------------------------------------------------------- resources of organisation A


def _token_id(client, tenant) -> int:  # noqa: ANN001
    """A token of A's admin other than the one the caller uses."""
    db = client.application.extensions["wellbeing.db"]
    with db.session(tenant.org_id) as session:
        user = session.get(accounts.User, tenant.admin_id)
        return accounts.issue_token(session, user, timedelta(hours=1)).record.id


def _user_id(client, tenant) -> int:  # noqa: ANN001
    body = {"email": f"u{uuid.uuid4().hex[:8]}@example.com", "role": "manager"}
    return client.post("/api/v1/users", json=body, headers=tenant.headers).get_json()["id"]


def _partner_id(client, tenant) -> int:  # noqa: ANN001
    return client.post("/api/v1/partners", json={"name": f"Partner {uuid.uuid4().hex[:8]}"}, headers=tenant.headers).get_json()["id"]


def _topic_id(client, tenant) -> int:  # noqa: ANN001
    return client.post("/api/v1/topics", json={"name": f"Topic {uuid.uuid4().hex[:8]}"}, headers=tenant.headers).get_json()["id"]


def _article_id(client, tenant) -> int:  # noqa: ANN001
    return client.post("/api/v1/articles", json={"title": "Access check", "body": "Text."}, headers=tenant.headers).get_json()["id"]


def _published_article_id(client, tenant) -> int:  # noqa: ANN001
    article_id = _article_id(client, tenant)
    client.post(f"/api/v1/articles/{article_id}/submit", json={}, headers=tenant.headers)
    assert client.post(f"/api/v1/articles/{article_id}/publish", json={}, headers=tenant.headers).status_code == 200
    return article_id


def _employee_id(client, tenant) -> int:  # noqa: ANN001
    key = uuid.uuid4().hex[:8]
    body = {"external_id": f"X{key}", "email": f"x{key}@example.com", "first_name": "Access", "last_name": "Check"}
    return client.post("/api/v1/employees", json=body, headers=tenant.headers).get_json()["id"]


def _job_id(client, tenant) -> int:  # noqa: ANN001
    data = b"external_id,email,first_name,last_name,department,team,manager_external_id,timezone\n"
    return client.post("/api/v1/employees/import", data=data, headers={**tenant.headers, "Content-Type": "text/csv"}).get_json()["id"]


def _program_id(client, tenant) -> int:  # noqa: ANN001
    return client.post("/api/v1/programs", json={"name": "Access check", "status": "open"}, headers=tenant.headers).get_json()["id"]


def _enrol(client, tenant, program_id: int, employee_id: int) -> int:  # noqa: ANN001
    body = {"employee_id": employee_id}
    return client.post(f"/api/v1/programs/{program_id}/enrolments", json=body, headers=tenant.headers).get_json()["items"][0]["id"]


def _enrolment_id(client, tenant, program_id: int | None = None) -> int:  # noqa: ANN001
    return _enrol(client, tenant, program_id or _program_id(client, tenant), _employee_id(client, tenant))


def _session_id(client, tenant, program_id: int | None = None) -> int:  # noqa: ANN001
    program_id = program_id or _program_id(client, tenant)
    # Started yesterday, so that attendance can be marked and removed.
    starts_at = (datetime.now(timezone.utc) - timedelta(days=1)).isoformat()
    body = {"title": "Access check", "starts_at": starts_at, "duration_minutes": 30}
    return client.post(f"/api/v1/programs/{program_id}/sessions", json=body, headers=tenant.headers).get_json()["id"]


def _run_id(client, tenant) -> int:  # noqa: ANN001
    _employee_id(client, tenant)
    return client.post("/api/v1/digests/runs", json={"week": "2026-W48"}, headers=tenant.headers).get_json()["id"]


def _send_id(client, tenant) -> int:  # noqa: ANN001
    employee_id = _employee_id(client, tenant)
    _published_article_id(client, tenant)
    client.post("/api/v1/digests/runs", json={"week": "2026-W48"}, headers=tenant.headers)
    return client.get(f"/api/v1/digests/sends?employee_id={employee_id}", headers=tenant.headers).get_json()["items"][0]["id"]


def _suppression_id(client, tenant) -> int:  # noqa: ANN001
    from shared.db import utcnow
    from shared.models import SuppressedAddress

    with client.application.extensions["wellbeing.db"].session(tenant.org_id) as session:
        row = SuppressedAddress(email=f"s{uuid.uuid4().hex[:8]}@example.com", hard_failures=3, suppressed_at=utcnow())
        session.add(row)
        session.flush()
        return row.id


# Path parameter name -> factory(client, tenant) returning a value owned by that tenant.
# A rule's parameters are filled left to right; an enrolment belongs to the rule's program.
RESOURCE_FACTORIES: dict[str, Callable] = {
    "token_id": _token_id,
    "user_id": _user_id,
    "partner_id": _partner_id,
    "topic_id": _topic_id,
    "article_id": _article_id,
    "employee_id": _employee_id,
    "job_id": _job_id,
    "program_id": _program_id,
    "enrolment_id": _enrolment_id,  # these two are called with the rule's program_id
    "session_id": _session_id,
    "run_id": _run_id,
    "send_id": _send_id,
    "suppression_id": _suppression_id,
    "score": lambda client, tenant: 4,
    "area": lambda client, tenant: "articles",
    "key": lambda client, tenant: "1700000000.M1P1.mailbox",
}
# Static files: one real file per endpoint.
STATIC_FILES = {
    "static": "robots.txt",
    "console.static": "console.css",
    "api_docs.static": "swagger-init.js",
    "api_docs.swagger_assets": "swagger-ui.css",
}


# What a caller sends besides credentials, where an empty request would be turned away
# before access control matters: "METHOD rule" -> function(row) -> query or form fields.
QUERIES: dict[str, Callable] = {
    "GET /api/v1/digests/preview": lambda row: {"employee_id": row.employee.id},
    "GET /console/digests/preview.html": lambda row: {"employee_id": row.employee.id},
}
FORMS: dict[str, Callable] = {
    "POST /console/employees/<int:employee_id>/erase": lambda row: {"confirm": "y"},
    "POST /console/programs/<int:program_id>/enrol": lambda row: {"enrol-external_ids": row.employee.external_id},
    "POST /console/invite/<token>": lambda row: {"password": "a-long-enough-password-2026"},
}


# ---------------------------------------------------------------- signed links


def _link(purpose: str, secret: str, employee: Employee, org_id: int, article_id: int | None) -> str:
    if purpose == "preferences":
        return employees.preference_token(secret, employee)
    if purpose == "unsubscribe":
        return digest_render.unsubscribe_token(secret, employee)
    if purpose == "pulse":
        return digest_render.pulse_token(secret, employee, "2026-W48")
    if purpose == "pulse-with-score":  # links sent before the score moved into the path
        return digest_render._sign(secret, digest_render.PULSE_PURPOSE, employee, False, w="2026-W48", s=4)
    if purpose == "article":
        return articles.article_link_token(secret, org_id, article_id, employee.id)
    if purpose == "invite":
        return accounts.invitation_signer(secret).sign({"user_id": employee.id, "epoch": 0})
    raise AssertionError(purpose)


def _link_purpose(rule: Rule) -> str:
    if rule.rule == "/pulse/<token>":
        return "pulse-with-score"
    for prefix, purpose in (("/p/", "preferences"), ("/u/", "unsubscribe"), ("/pulse/", "pulse"), ("/a/", "article"),
                            ("/console/invite/", "invite")):
        if rule.rule.startswith(prefix):
            return purpose
    raise AssertionError(f"{rule.rule}: which signed link goes in <token>? Add it to _link_purpose")


# ---------------------------------------------------------------- callers


@dataclass
class Caller:
    name: str
    org_id: int | None = None
    user_id: int | None = None
    cookie: str = ""
    csrf: str = ""


def _session_of(app, email: str | None) -> tuple[str, str]:  # noqa: ANN001
    """(session cookie, CSRF token) of a console session, signed in when ``email`` is given."""
    browser = app.test_client()
    if email is not None:
        assert login_console(browser, email, ADMIN_PASSWORD).status_code == 302
    html = browser.get("/console/" if email else "/console/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)
    return browser.get_cookie("session").value, csrf


@dataclass
class Row:
    """One row's fresh world: A's resources, the employee and their links."""

    path_values: dict[str, str]
    employee: Employee
    article_id: int


def _caller_headers(app, caller: Caller, rule: Rule, row: Row) -> dict[str, str]:  # noqa: ANN001
    if not rule.rule.startswith(API_PREFIX):
        return {"Cookie": f"session={caller.cookie}"} if caller.cookie else {}
    if caller.name == "employee":
        return {"Authorization": f"Bearer {employees.preference_token(app.extensions['wellbeing.settings'].secret_key, row.employee)}"}
    if caller.user_id is None:
        return {}
    with app.extensions["wellbeing.db"].session(caller.org_id) as session:
        issued = accounts.issue_token(session, session.get(accounts.User, caller.user_id), timedelta(hours=1))
    return {"Authorization": f"Bearer {issued.token}"}


def _path(app, rule: Rule, caller: Caller, row: Row) -> str:  # noqa: ANN001
    values = dict(row.path_values)
    if "token" in rule.arguments:
        purpose = _link_purpose(rule)
        secret = app.extensions["wellbeing.settings"].secret_key
        if caller.name == "employee":
            # The employee's genuine link; for an invitation they only have links of other purposes.
            values["token"] = _link("preferences" if purpose == "invite" else purpose, secret, row.employee, row.employee.org_id, row.article_id)
        else:
            values["token"] = _link(purpose, FORGING_KEY, row.employee, row.employee.org_id, row.article_id)
    path = rule.rule
    for name in rule.arguments:
        path = re.sub(rf"<(?:[^:>]+:)?{name}>", str(values[name]), path)
    return path


def _row(client, app, rule: Rule, target) -> Row:  # noqa: ANN001
    values: dict[str, str] = {}
    for name in re.findall(r"<(?:[^:>]+:)?(\w+)>", rule.rule):
        if name == "token":
            continue
        if name == "filename":
            values[name] = STATIC_FILES[rule.endpoint]
        elif name in ("enrolment_id", "session_id"):
            values[name] = RESOURCE_FACTORIES[name](client, target, values.get("program_id"))
        elif name in RESOURCE_FACTORIES:
            values[name] = RESOURCE_FACTORIES[name](client, target)
        else:
            pytest.fail(f"{rule.rule}: no factory for path parameter {name!r}; add one to RESOURCE_FACTORIES")
    employee_id = _employee_id(client, target)
    if "program_id" in values:
        # So that withdrawing (by the employee, or of the rule's employee) has something to withdraw.
        for enrolled in {employee_id, values.get("employee_id")} - {None}:
            _enrol(client, target, values["program_id"], enrolled)
    if "session_id" in values and "employee_id" in values:
        # So that removing the rule's employee's attendance has something to remove.
        path = f"/api/v1/programs/{values['program_id']}/sessions/{values['session_id']}/attendance"
        client.post(path, json={"employee_id": values["employee_id"]}, headers=target.headers)
    article_id = _published_article_id(client, target) if rule.rule.startswith("/a/") else 0
    with app.extensions["wellbeing.db"].session(target.org_id) as session:
        employee = session.get(Employee, employee_id)
        session.expunge(employee)
    return Row(values, employee, article_id)


def all_rules(app) -> list[tuple[Rule, str]]:  # noqa: ANN001
    return [(rule, method) for rule in app.url_map.iter_rules() for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]


@pytest.fixture
def callers(app, tenant, other_tenant, make_user) -> dict[str, Caller]:  # noqa: ANN001
    manager = make_user(tenant, Role.MANAGER)
    found = {
        "anonymous": Caller("anonymous"),
        "employee": Caller("employee"),
        "manager": Caller("manager", tenant.org_id, manager.admin_id),
        "hr": Caller("hr", tenant.org_id, tenant.admin_id),
        "other_hr": Caller("other_hr", other_tenant.org_id, other_tenant.admin_id),
    }
    emails = {"manager": manager.admin_email, "hr": tenant.admin_email, "other_hr": other_tenant.admin_email}
    for name, caller in found.items():
        caller.cookie, caller.csrf = _session_of(app, emails.get(name))
    return found


def _observe(app, client, rule: Rule, method: str, callers: dict[str, Caller], target) -> dict[str, int]:  # noqa: ANN001
    row = _row(client, app, rule, target)
    bare = app.test_client(use_cookies=False)
    seen = {}
    # The HR admin of A goes last: its DELETEs and erasures really happen.
    for name in ("anonymous", "other_hr", "manager", "employee", "hr"):
        caller = callers[name]
        key = f"{method} {rule.rule}"
        kwargs: dict = {"headers": _caller_headers(app, caller, rule, row), "query_string": QUERIES.get(key, lambda _row: {})(row)}
        if method in ("POST", "PUT", "PATCH", "DELETE"):
            if rule.rule.startswith(API_PREFIX):
                kwargs["json"] = {} if method != "DELETE" else None
            else:
                kwargs["data"] = {"csrf_token": caller.csrf, **FORMS.get(key, lambda _row: {})(row)}
        seen[name] = bare.open(_path(app, rule, caller, row), method=method, **kwargs).status_code
    return seen


def test_every_endpoint_answers_each_caller_as_declared(app, client, tenant, callers):
    routes = {f"{method} {rule.rule}": (rule, method) for rule, method in all_rules(app)}
    missing = sorted(set(routes) - set(EXPECTED))
    assert not missing, "endpoints without a row in EXPECTED (add one):\n" + "\n".join(missing)
    stale = sorted(set(EXPECTED) - set(routes))
    assert not stale, "rows in EXPECTED for endpoints that no longer exist:\n" + "\n".join(stale)
    wrong = []
    for key, (rule, method) in sorted(routes.items()):
        seen = _observe(app, client, rule, method, callers, tenant)
        observed = tuple(seen[name] for name in CALLERS)
        if observed != EXPECTED[key]:
            wrong.append(f"{key!r}: expected {EXPECTED[key]}, got {observed}")
    assert not wrong, f"{len(wrong)} cells differ, (anonymous, employee, manager, hr, other_hr):\n" + "\n".join(wrong)


def test_the_api_ignores_console_sessions(app, callers):
    """A signed-in browser cannot be made to call the API (no CSRF on the API)."""
    bare = app.test_client(use_cookies=False)
    checked = 0
    for rule, method in all_rules(app):
        if not rule.rule.startswith(API_PREFIX) or rule.arguments or _policy(app, rule, method)[0]:
            continue
        response = bare.open(rule.rule, method=method, headers={"Cookie": f"session={callers['hr'].cookie}"},
                             json={} if method in ("POST", "PATCH") else None)
        assert response.status_code == 401, f"{method} {rule.rule} with a console session -> {response.status_code}"
        checked += 1
    assert checked >= 20


def test_a_genuine_link_of_another_organisation_reaches_nothing_of_a(app, client, tenant, other_tenant):
    """Employee pages that take an id besides the link: B's employee, with a genuine link
    of B, asking for A's resource, is not found."""
    secret = app.extensions["wellbeing.settings"].secret_key
    outsider_id = _employee_id(client, other_tenant)
    with app.extensions["wellbeing.db"].session(other_tenant.org_id) as session:
        outsider = session.get(Employee, outsider_id)
        session.expunge(outsider)
    checked = 0
    for rule, method in all_rules(app):
        ids = [name for name in rule.arguments if name.endswith("_id")]
        if "token" not in rule.arguments or not ids:
            continue
        path = rule.rule.replace("<token>", _link(_link_purpose(rule), secret, outsider, other_tenant.org_id, None))
        for name in ids:
            path = re.sub(rf"<(?:[^:>]+:)?{name}>", str(RESOURCE_FACTORIES[name](client, tenant)), path)
        browser = app.test_client()
        csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', browser.get("/console/login").get_data(as_text=True)).group(1)
        response = browser.open(path, method=method, data={"csrf_token": csrf} if method == "POST" else None)
        assert response.status_code == 404, f"{method} {rule.rule} with B's link on A's ids -> {response.status_code}"
        checked += 1
    assert checked >= 3


def _policy(app, rule: Rule, method: str):  # noqa: ANN001
    from services import auth

    with app.app_context():
        return auth.access_policy(rule.endpoint, method)


def test_hr_admin_only_is_the_default():
    assert DEFAULT_ROLES == frozenset({Role.HR_ADMIN})
    assert PUBLIC_ENDPOINTS == {"api-docs.openapi_json", "api_docs.static"}


def test_public_endpoints_are_only_the_intended_ones(app):
    public = sorted({f"{m} {r.rule}" for r, m in all_rules(app) if r.rule.startswith(API_PREFIX) and _policy(app, r, m)[0]})
    assert public == [
        "GET /api/v1/docs",
        "GET /api/v1/docs/assets/<path:filename>",
        "GET /api/v1/openapi.json",
        "GET /api/v1/static/<path:filename>",
        "POST /api/v1/auth/token",
    ]
