"""The interactive API docs render in Chromium under the strict CSP, from local assets."""
from playwright.sync_api import expect


def test_swagger_ui_renders_without_csp_violations(page, live_server):
    problems = []
    page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
    external = []
    page.on("request", lambda r: external.append(r.url) if not r.url.startswith(live_server) and not r.url.startswith("data:") else None)
    page.goto(f"{live_server}/api/v1/docs")
    expect(page.get_by_role("heading", name="Wellbeing platform API")).to_be_visible()
    expect(page.get_by_text("/api/v1/auth/token").first).to_be_visible()
    assert problems == []
    assert external == []
