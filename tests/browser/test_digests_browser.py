"""An HR admin previews a digest, starts a run, watches its progress reach done, and
finds the mail in the development mailbox (real SMTP sink, real Celery worker)."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.conftest import free_port, make_settings
from tests.digest_support import add_article, add_employees


@pytest.fixture
def settings(database_url, broker_url, tmp_path):  # noqa: ANN001
    """Development settings: the console shows the mailbox of the dev SMTP sink."""
    return make_settings(database_url, broker_url, free_port(), WELLBEING_ENV="development", WELLBEING_DATA_DIR=str(tmp_path))


@pytest.fixture
def dev_pipeline(settings):  # noqa: ANN001
    """The development SMTP sink (Maildir) and a Celery worker sending to it."""
    from celery.contrib.testing.worker import start_worker

    from services.smtp_sink import start as start_sink
    from tests.digest_support import use_broker
    from workers.celery_app import celery_app

    sink = start_sink(settings.mailbox_dir, "127.0.0.1", settings.smtp.port)
    use_broker(settings)
    try:
        with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            yield
    finally:
        sink.stop()


def test_preview_run_progress_and_mailbox(page, live_server, db, tenant, console_login, dev_pipeline):
    add_employees(db, tenant.org_id, 3, prefix="pw")
    add_article(db, tenant.org_id, "Stretch at your desk")
    console_login(tenant.admin_email)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Digests").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Digests")

    page.get_by_label("Employee").select_option(label="First0 Last0 (pw0@staff.example)")
    page.get_by_label("Week", exact=True).fill("2026-W48")
    page.get_by_role("button", name="Preview").click()
    preview = page.get_by_test_id("digest-preview")
    expect(preview).to_contain_text("Stretch at your desk")
    expect(preview).to_contain_text("HOW ARE YOU THIS WEEK?")

    page.get_by_label("ISO week").fill("2026-W48")
    page.get_by_role("button", name="Start run").click()
    expect(page).to_have_url(re.compile(r"/console/digests/runs/\d+$"))
    # The static script polls the run's JSON and updates the counts until it is done.
    expect(page.get_by_test_id("run-status")).to_have_text(re.compile(r"^done: 0 queued, 0 sending, 3 sent"), timeout=30000)

    page.goto(f"{live_server}/console/mailbox")
    for n in range(3):
        expect(page.get_by_text(f"pw{n}@staff.example").first).to_be_visible()
    expect(page.get_by_text(re.compile("your wellbeing digest, week of 23 November 2026")).first).to_be_visible()
