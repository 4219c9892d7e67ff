"""API errors are RFC 9457 problem details with field-level detail."""
import pytest

PROBLEM = "application/problem+json"


def _assert_problem(response, status):  # noqa: ANN001
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert body["status"] == status
    assert body["title"] and body["type"] == "about:blank"
    assert body["instance"] == response.request.path
    return body


def test_unknown_field_and_bad_value_are_422_with_field_detail(client, tenant):
    body = _assert_problem(
        client.post("/api/v1/users", json={"email": "not-an-email", "role": "ceo", "extra": 1}, headers=tenant.headers), 422
    )
    fields = {(e["location"], e["field"]) for e in body["errors"]}
    assert fields == {("json", "email"), ("json", "role"), ("json", "extra")}
    assert all(e["pointer"].startswith("/") and e["detail"] for e in body["errors"])


def test_missing_required_field_is_422(client, tenant):
    body = _assert_problem(client.post("/api/v1/users", json={"role": "manager"}, headers=tenant.headers), 422)
    assert [e["field"] for e in body["errors"]] == ["email"]


def test_bad_query_parameter_is_422(client, tenant):
    body = _assert_problem(client.get("/api/v1/users?per_page=1000", headers=tenant.headers), 422)
    assert body["errors"][0] == {"location": "query", "field": "per_page", "pointer": "/per_page", "detail": body["errors"][0]["detail"]}


def test_malformed_json_is_400(client, tenant):
    _assert_problem(client.post("/api/v1/users", data="{not json", content_type="application/json", headers=tenant.headers), 400)


def test_wrong_content_type_is_415(client, tenant):
    _assert_problem(client.post("/api/v1/users", data="email=a@b.c", content_type="application/x-www-form-urlencoded", headers=tenant.headers), 415)


def test_too_large_body_is_413(client, tenant):
    _assert_problem(client.post("/api/v1/users", data=b"x" * (26 * 1024 * 1024), content_type="application/json", headers=tenant.headers), 413)


def test_unknown_route_and_method(client, tenant):
    _assert_problem(client.get("/api/v1/nothing-here", headers=tenant.headers), 404)
    _assert_problem(client.put("/api/v1/users", json={}, headers=tenant.headers), 405)


def test_duplicate_email_is_409(client, tenant):
    body = _assert_problem(client.post("/api/v1/users", json={"email": tenant.admin_email, "role": "manager"}, headers=tenant.headers), 409)
    assert body["errors"][0]["field"] == "email"


def test_wrong_role_is_403(client, tenant, make_user):
    from shared.models import Role

    manager = make_user(tenant, Role.MANAGER)
    _assert_problem(client.get("/api/v1/users", headers=manager.headers), 403)


@pytest.mark.parametrize("path", ["/console/nothing", "/console/users/999/active"])
def test_console_errors_stay_html(client, path):
    response = client.get(path)
    assert response.mimetype == "text/html"
