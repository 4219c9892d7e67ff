"""The OpenAPI document validates and describes every operation with its security."""
from openapi_spec_validator import validate


def test_openapi_document_validates(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()
    validate(spec)
    assert spec["info"]["title"] == "Wellbeing platform API"
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}


def test_every_operation_is_documented(app, client):
    spec = client.get("/api/v1/openapi.json").get_json()
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops if method != "parameters"}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.endpoint.startswith(("api_docs.", "api-docs.")):
            continue
        path = rule.rule.removeprefix("/api/v1").replace("<int:", "{").replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (f"/api/v1{path}" if not path.startswith("/api/v1") else path, method) in documented or (path, method) in documented, (
                f"{method} {rule.rule} missing from the OpenAPI document"
            )


def test_token_endpoint_is_documented_as_public(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["paths"]["/api/v1/auth/token"]["post"]["security"] == []
    assert spec["security"] == [{"bearerAuth": []}]


def test_interactive_docs_are_served_without_cdn(client):
    page = client.get("/api/v1/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "http://" not in html and "https://" not in html
    assert client.get("/api/v1/docs/assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/api/v1/static/swagger-init.js").status_code == 200


def test_errors_are_listed_per_operation_as_problem_json(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    components = spec["components"]["responses"]
    for path, ops in spec["paths"].items():
        for method, operation in ops.items():
            if method == "parameters":
                continue
            responses = operation["responses"]
            assert "default" not in responses, f"{method} {path}: errors are listed, not a catch-all"
            if operation.get("security") != []:
                assert {"401", "403"} <= set(responses), f"{method} {path}"
            if "{" in path:
                assert "404" in responses, f"{method} {path}"
            for status, response in responses.items():
                if int(status) >= 400:
                    response = components[response["$ref"].rsplit("/", 1)[1]] if "$ref" in response else response
                    assert list(response["content"]) == ["application/problem+json"], f"{method} {path} {status}"
