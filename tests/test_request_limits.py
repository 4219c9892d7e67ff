"""Request limits answer problem+json, never a 500 or an unbounded parse: body size
(MAX_REQUEST_MB), CSV and article uploads, JSON nesting depth, pagination caps."""
import io

import pytest

from services.app import create_app
from services.limits import MAX_JSON_DEPTH
from shared.schemas.common import MAX_PER_PAGE
from tests.conftest import make_settings

PROBLEM = "application/problem+json"
CSV_HEADER = b"external_id,email,first_name,last_name,department,team,manager_external_id,timezone\n"


def _problem(response, status):  # noqa: ANN001
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert body["status"] == status and body["detail"]
    return body


@pytest.fixture
def small_client(database_url, broker_url, smtp_sink, db):  # noqa: ANN001
    """The app with a 1 MB request limit."""
    return create_app(make_settings(database_url, broker_url, smtp_sink.port, MAX_REQUEST_MB="1")).test_client()


def test_body_over_the_configured_limit_is_413_naming_it(small_client, tenant):
    over = 1024 * 1024 + 1
    json_body = small_client.post("/api/v1/partners", data=b'{"name": "' + b"x" * over + b'"}', content_type="application/json",
                                  headers=tenant.headers)
    assert "1 MB limit" in _problem(json_body, 413)["detail"]
    csv_body = small_client.post("/api/v1/employees/import", data=CSV_HEADER + b"a" * over, content_type="text/csv", headers=tenant.headers)
    assert "1 MB limit" in _problem(csv_body, 413)["detail"]
    csv_file = small_client.post("/api/v1/employees/import", data={"file": (io.BytesIO(CSV_HEADER + b"a" * over), "big.csv")},
                                 content_type="multipart/form-data", headers=tenant.headers)
    assert "1 MB limit" in _problem(csv_file, 413)["detail"]
    # Under the limit the same endpoint works.
    ok = small_client.post("/api/v1/employees/import", data=CSV_HEADER, content_type="text/csv", headers=tenant.headers)
    assert ok.status_code == 201


def test_article_file_over_2_mb_is_413_naming_the_file(client, tenant):
    big = io.BytesIO(b"Title\n\n" + b"word " * (2 * 1024 * 1024 // 5 + 10))
    response = client.post("/api/v1/articles/import", data={"files": [(big, "long-read.txt")]}, content_type="multipart/form-data",
                           headers=tenant.headers)
    body = _problem(response, 413)
    assert "long-read.txt" in body["detail"] and "2 MB" in body["detail"]


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 100_000])
def test_json_nested_too_deeply_is_400_before_any_schema(client, tenant, depth):
    body = '{"name": ' + _nested(depth - 1) + "}"
    response = client.post("/api/v1/partners", data=body, content_type="application/json", headers=tenant.headers)
    assert f"nested deeper than {MAX_JSON_DEPTH}" in _problem(response, 400)["detail"]
    # The public sign-in endpoint is held to it too.
    login = client.post("/api/v1/auth/token", data=_nested(depth), content_type="application/json")
    _problem(login, 400)


def test_json_at_the_depth_limit_reaches_the_schema(client, tenant):
    body = '{"name": ' + _nested(MAX_JSON_DEPTH - 1) + "}"
    response = client.post("/api/v1/partners", data=body, content_type="application/json", headers=tenant.headers)
    assert _problem(response, 422)["errors"][0]["field"] == "name"


def test_every_list_caps_per_page(app, client, tenant):
    spec = client.get("/api/v1/openapi.json").get_json()
    lists = [path for path, ops in spec["paths"].items()
             if "get" in ops and "{" not in path and any(p["name"] == "per_page" for p in ops["get"].get("parameters", []))]
    assert len(lists) >= 10
    for path in lists:
        too_many = client.get(f"{path}?per_page={MAX_PER_PAGE + 1}", headers=tenant.headers)
        assert [e["field"] for e in _problem(too_many, 422)["errors"]] == ["per_page"], path
        at_cap = client.get(f"{path}?per_page={MAX_PER_PAGE}", headers=tenant.headers)
        assert at_cap.status_code == 200, (path, at_cap.get_data(as_text=True)[:300])


def test_ids_beyond_the_id_range_are_not_found_or_invalid(client, tenant):
    _problem(client.get(f"/api/v1/employees/{2**40}", headers=tenant.headers), 404)
    _problem(client.get(f"/api/v1/digests/preview?employee_id={2**40}", headers=tenant.headers), 422)
    _problem(client.get(f"/api/v1/employees?manager_id={-2**70}", headers=tenant.headers), 422)
