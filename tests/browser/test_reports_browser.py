"""A manager signs in through Chromium, sees their reporting line's dashboard with SVG
charts and a suppressed cell, and cannot reach another team's report."""
import re

from playwright.sync_api import expect

from shared.models import Role
from tests.test_reports import WEEK, build, build_org, record


def test_manager_sees_own_line_with_a_suppressed_cell_and_nothing_else(page, live_server, db, tenant, make_user, console_login):
    boss, lead, people = build_org(db, tenant, sizes={"Blue": 8, "Green": 2}, manager_email="mona.browser@example.com")
    make_user(tenant, Role.MANAGER, email="mona.browser@example.com")
    record(db, tenant, people["Blue"] + people["Green"], score=4)
    record(db, tenant, people["Blue"], kind="digest_delivered")
    build(db, tenant)
    console_login("mona.browser@example.com")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Reports").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Reports")
    expect(page.get_by_role("img", name=re.compile("Participation trend"))).to_be_visible()
    expect(page.get_by_role("img", name=re.compile("Pulse trend"))).to_be_visible()
    heat = page.get_by_test_id("heatmap")
    expect(heat.get_by_role("rowheader", name=re.compile("Reporting line of Mona"))).to_be_visible()
    expect(heat.get_by_test_id("suppressed-cell").first).to_contain_text("fewer than 5 people")
    expect(page.get_by_text("Whole organisation")).to_have_count(0)
    expect(page.get_by_text("Sales/Blue")).to_have_count(0)
    # another team's report: refused
    response = page.goto(f"{live_server}/console/reports?week={WEEK}&group=team:Sales/Blue")
    assert response.status == 403
    expect(page.get_by_role("alert")).to_contain_text("Managers see only their own reporting line")
    response = page.goto(f"{live_server}/console/reports?week={WEEK}&group=line:999999")
    assert response.status == 404
