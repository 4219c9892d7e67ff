"""Every response, API or page, carries the security headers."""
import pytest

from services.app import create_app
from tests.conftest import make_settings


@pytest.mark.parametrize("path", ["/healthz", "/api/v1/openapi.json", "/api/v1/users", "/console/login", "/api/v1/docs", "/nowhere"])
def test_headers_on_every_response(client, path):
    response = client.get(path)
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "Strict-Transport-Security" not in response.headers  # served over http here


def test_hsts_when_public_url_is_https(database_url, broker_url, smtp_sink, db):
    app = create_app(make_settings(database_url, broker_url, smtp_sink.port, PUBLIC_URL="https://wellbeing.example.com"))
    response = app.test_client().get("/healthz")
    assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000")


def test_console_pages_have_no_inline_scripts(client):
    html = client.get("/console/login").get_data(as_text=True)
    assert "<script>" not in html and " on" + "click=" not in html
