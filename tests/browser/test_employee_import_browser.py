"""An HR admin uploads an HRIS CSV with some bad rows in the console (Chromium), watches
the progress bar finish (the job runs on a real Celery worker) and reads the error table."""
import re

from playwright.sync_api import expect

ROWS = ["external_id,email,first_name,last_name,department,team,manager_external_id,timezone"]
ROWS += [f"E{i},person{i}@example.com,First{i},Last{i},Eng,Team{i % 5},{'E0' if i else ''},Europe/London" for i in range(300)]
ROWS += [
    "B1,not-an-email,Bad,Email,Eng,Core,,UTC",
    "B2,b2@example.com,Bad,Zone,Eng,Core,,Mars/Olympus",
    "E5,dup@example.com,Dup,Licate,Eng,Core,,UTC",
]


def test_upload_csv_with_bad_rows_shows_progress_and_errors(page, live_server, tenant, console_login, settings, tmp_path):
    from celery.contrib.testing.worker import start_worker

    from workers.celery_app import celery_app, configure

    path = tmp_path / "hris.csv"
    path.write_text("\r\n".join(ROWS) + "\r\n", encoding="utf-8")
    console_login(tenant.admin_email)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Employees").click()
    page.get_by_role("link", name="Import from an HRIS CSV file").click()
    page.get_by_label("HRIS CSV file").set_input_files(str(path))
    page.get_by_role("button", name="Import").click()
    expect(page).to_have_url(re.compile(r"/console/employees/import/\d+$"))
    progress = page.locator("progress#import-progress")
    expect(progress).to_be_visible()
    # No worker yet: the job waits in the queue and the page keeps polling.
    expect(page.get_by_test_id("import-status")).to_contain_text("queued")
    expect(page.get_by_test_id("import-summary")).to_have_count(0)
    configure(settings)
    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        # The worker runs the job; the page's script sees it finish and shows the result.
        expect(page.get_by_test_id("import-summary")).to_be_visible(timeout=30000)
    expect(progress).to_have_attribute("value", "303")
    expect(progress).to_have_attribute("max", "303")
    expect(page.get_by_test_id("import-status")).to_contain_text("done: 303 of 303 rows, 3 errors")
    errors = page.locator("table#import-errors")
    expect(errors.locator("tbody tr")).to_have_count(3)
    expect(errors.locator("tbody tr").nth(0)).to_contain_text("302")
    expect(errors.locator("tbody tr").nth(0)).to_contain_text("bad email")
    expect(errors.locator("tbody tr").nth(1)).to_contain_text("unknown timezone")
    expect(errors.locator("tbody tr").nth(2)).to_contain_text("duplicate in file")
    expect(page.get_by_test_id("import-summary")).to_contain_text("Created: 300")

    page.get_by_role("link", name="Employees").last.click()
    expect(page.get_by_role("table")).to_contain_text("300 employees")
