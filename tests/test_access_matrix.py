"""Walks the URL map: every API endpoint is checked for anonymous access (401),
wrong role (403) and another organisation's ids (404), so a new endpoint cannot
escape these checks. An endpoint with a path parameter nobody knows how to fill
fails the test until a factory for it is added to RESOURCE_FACTORIES."""
from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from werkzeug.routing import Rule

from services.auth import DEFAULT_ROLES, PUBLIC_ENDPOINTS
from shared.models import Role

API_PREFIX = "/api/v1"


def _token_id(client, tenant) -> int:  # noqa: ANN001
    return client.get("/api/v1/auth/tokens", headers=tenant.headers).get_json()["items"][0]["id"]


def _user_id(client, tenant) -> int:  # noqa: ANN001
    return tenant.admin_id


def _partner_id(client, tenant) -> int:  # noqa: ANN001
    import uuid

    return client.post("/api/v1/partners", json={"name": f"Partner {uuid.uuid4().hex[:8]}"}, headers=tenant.headers).get_json()["id"]


def _topic_id(client, tenant) -> int:  # noqa: ANN001
    import uuid

    return client.post("/api/v1/topics", json={"name": f"Topic {uuid.uuid4().hex[:8]}"}, headers=tenant.headers).get_json()["id"]


def _article_id(client, tenant) -> int:  # noqa: ANN001
    return client.post("/api/v1/articles", json={"title": "Access check", "body": "Text."}, headers=tenant.headers).get_json()["id"]


def _employee_id(client, tenant) -> int:  # noqa: ANN001
    import uuid

    key = uuid.uuid4().hex[:8]
    body = {"external_id": f"X{key}", "email": f"x{key}@example.com", "first_name": "Access", "last_name": "Check"}
    return client.post("/api/v1/employees", json=body, headers=tenant.headers).get_json()["id"]


def _job_id(client, tenant) -> int:  # noqa: ANN001
    data = b"external_id,email,first_name,last_name,department,team,manager_external_id,timezone\n"
    return client.post("/api/v1/employees/import", data=data, headers={**tenant.headers, "Content-Type": "text/csv"}).get_json()["id"]


def _program_id(client, tenant) -> int:  # noqa: ANN001
    return client.post("/api/v1/programs", json={"name": "Access check", "status": "open"}, headers=tenant.headers).get_json()["id"]


def _enrolment_id(client, tenant) -> int:  # noqa: ANN001
    program_id = _program_id(client, tenant)
    body = {"employee_id": _employee_id(client, tenant)}
    return client.post(f"/api/v1/programs/{program_id}/enrolments", json=body, headers=tenant.headers).get_json()["items"][0]["id"]


def _session_id(client, tenant) -> int:  # noqa: ANN001
    program_id = _program_id(client, tenant)
    body = {"title": "Access check", "starts_at": "2026-12-01T10:00:00Z", "duration_minutes": 30}
    return client.post(f"/api/v1/programs/{program_id}/sessions", json=body, headers=tenant.headers).get_json()["id"]


def _run_id(client, tenant) -> int:  # noqa: ANN001
    return client.post("/api/v1/digests/runs", json={"week": "2026-W48"}, headers=tenant.headers).get_json()["id"]


def _send_id(client, tenant) -> int:  # noqa: ANN001
    employee_id = _employee_id(client, tenant)
    _run_id(client, tenant)
    return client.get(f"/api/v1/digests/sends?employee_id={employee_id}", headers=tenant.headers).get_json()["items"][0]["id"]


def _suppression_id(client, tenant) -> int:  # noqa: ANN001
    import uuid

    from shared.db import utcnow
    from shared.models import SuppressedAddress

    with client.application.extensions["wellbeing.db"].session(tenant.org_id) as session:
        row = SuppressedAddress(email=f"s{uuid.uuid4().hex[:8]}@example.com", hard_failures=3, suppressed_at=utcnow())
        session.add(row)
        session.flush()
        return row.id


# Path parameter name -> factory(client, tenant) returning an id owned by that tenant.
RESOURCE_FACTORIES: dict[str, Callable] = {
    "token_id": _token_id,
    "user_id": _user_id,
    "partner_id": _partner_id,
    "topic_id": _topic_id,
    "article_id": _article_id,
    "employee_id": _employee_id,
    "job_id": _job_id,
    "program_id": _program_id,
    "enrolment_id": _enrolment_id,
    "session_id": _session_id,
    "run_id": _run_id,
    "send_id": _send_id,
    "suppression_id": _suppression_id,
}


def api_rules(app) -> list[tuple[Rule, str]]:  # noqa: ANN001
    rules = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(API_PREFIX):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            rules.append((rule, method))
    return rules


def _policy(app, rule: Rule, method: str):  # noqa: ANN001
    from services import auth

    with app.app_context():
        return auth.access_policy(rule.endpoint, method)


def _fill(rule: Rule, values: dict[str, int]) -> str:
    path = rule.rule
    for name in rule.arguments:
        if name not in values:
            pytest.fail(f"{rule.rule}: no factory for path parameter {name!r}; add one to RESOURCE_FACTORIES")
        path = re.sub(rf"<(?:[^:>]+:)?{name}>", str(values[name]), path)
    return path


def _ids_for(client, owner, rule: Rule) -> dict[str, int]:  # noqa: ANN001
    values = {}
    for name in rule.arguments:
        if name not in RESOURCE_FACTORIES:
            pytest.fail(f"{rule.rule}: no factory for path parameter {name!r}; add one to RESOURCE_FACTORIES")
        values[name] = RESOURCE_FACTORIES[name](client, owner)
    return values


def test_every_api_endpoint_follows_the_access_rules(app, client, tenant, other_tenant, make_user):
    manager = make_user(tenant, Role.MANAGER)
    checked = 0
    for rule, method in api_rules(app):
        is_public, roles = _policy(app, rule, method)
        if is_public:
            continue
        # Anonymous callers are refused before anything else happens.
        path = _fill(rule, _ids_for(client, tenant, rule)) if rule.arguments else rule.rule
        anonymous = client.open(path, method=method, json={} if method in ("POST", "PUT", "PATCH") else None)
        assert anonymous.status_code == 401, f"{method} {rule.rule} anonymous -> {anonymous.status_code}"
        # A role outside the endpoint's roles is refused with 403.
        if Role.MANAGER not in roles:
            denied = client.open(path, method=method, headers=manager.headers, json={} if method in ("POST", "PUT", "PATCH") else None)
            assert denied.status_code == 403, f"{method} {rule.rule} as manager -> {denied.status_code}"
        # Another organisation's ids are not found, for reads and writes alike.
        if rule.arguments:
            foreign = _fill(rule, _ids_for(client, other_tenant, rule))
            response = client.open(foreign, method=method, headers=tenant.headers, json={} if method in ("POST", "PUT", "PATCH") else None)
            assert response.status_code == 404, f"{method} {rule.rule} cross-tenant -> {response.status_code}"
            assert response.mimetype == "application/problem+json"
        checked += 1
    assert checked >= 8


def test_hr_admin_only_is_the_default():
    assert DEFAULT_ROLES == frozenset({Role.HR_ADMIN})
    assert PUBLIC_ENDPOINTS == {"api-docs.openapi_json", "api_docs.static"}


def test_public_endpoints_are_only_the_intended_ones(app):
    public = sorted({f"{m} {r.rule}" for r, m in api_rules(app) if _policy(app, r, m)[0]})
    assert public == [
        "GET /api/v1/docs",
        "GET /api/v1/docs/assets/<path:filename>",
        "GET /api/v1/openapi.json",
        "GET /api/v1/static/<path:filename>",
        "POST /api/v1/auth/token",
    ]
