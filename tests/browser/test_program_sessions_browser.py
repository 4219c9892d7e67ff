"""In Chromium, an HR admin adds a session to a program through the console, opens it,
marks an enrolled employee as attended and deletes another session."""
import re
from datetime import timedelta

from playwright.sync_api import expect

from shared.db import utcnow

API = "/api/v1"


def test_hr_admin_adds_a_session_and_marks_attendance(page, live_server, client, tenant, console_login):
    employee = client.post(f"{API}/employees", json={"external_id": "E1", "email": "ann@example.com", "first_name": "Ann",
                                                     "last_name": "Archer"}, headers=tenant.headers).get_json()
    program = client.post(f"{API}/programs", json={"name": "Strength", "status": "open"}, headers=tenant.headers).get_json()
    client.post(f"{API}/programs/{program['id']}/enrolments", json={"employee_id": employee["id"]}, headers=tenant.headers)
    started = (utcnow() - timedelta(minutes=20)).replace(microsecond=0).isoformat()
    client.post(f"{API}/programs/{program['id']}/sessions", json={"title": "Kick-off", "starts_at": started, "duration_minutes": 30},
                headers=tenant.headers)

    console_login(tenant.admin_email)
    page.goto(f"{live_server}/console/programs/{program['id']}")
    sessions = page.locator("table#sessions")
    expect(sessions).to_contain_text("Kick-off")
    page.get_by_label("Title").last.fill("Week 2: squats")
    page.get_by_label("Starts at").fill("2026-12-08T18:30")
    page.get_by_label("Timezone of that time").fill("America/Los_Angeles")
    page.get_by_label("Duration (minutes)").fill("45")
    page.get_by_label("Location (room or address)").fill("Gym")
    page.get_by_role("button", name="Add session").click()
    expect(page.get_by_text("Session Week 2: squats added.")).to_be_visible()
    expect(sessions.locator("tbody tr")).to_have_count(2)
    expect(sessions).to_contain_text("2026-12-09 02:30")  # 18:30 in Los Angeles, shown in UTC

    sessions.get_by_role("link", name="Kick-off").click()
    expect(page).to_have_url(re.compile(rf"/console/programs/{program['id']}/sessions/\d+$"))
    attendance = page.locator("table#attendance")
    expect(attendance).to_contain_text("Ann Archer")
    attendance.get_by_role("button", name="Mark attended").click()
    expect(page.get_by_text("Marked as attended.")).to_be_visible()
    expect(attendance.get_by_role("button", name="Remove attendance")).to_be_visible()
    expect(page.locator(".lead")).to_contain_text("1 attended")

    page.get_by_role("link", name="Strength").click()
    row = sessions.locator("tbody tr", has_text="Week 2: squats")
    row.get_by_role("button", name="Delete").click()
    expect(page.get_by_text("Session deleted.")).to_be_visible()
    expect(sessions.locator("tbody tr")).to_have_count(1)
    expect(sessions.locator("tbody tr", has_text="Kick-off").locator("td").nth(4)).to_have_text("1")  # attended
