"""An HR admin signs in through the console in Chromium and sees the shell."""
import re

from playwright.sync_api import expect


def test_login_shows_shell_and_logout(page, live_server, tenant, console_login):
    console_login(tenant.admin_email)
    expect(page.get_by_role("heading", level=1)).to_have_text("Acme Ltd")
    nav = page.get_by_role("navigation", name="Main")
    for label in ("Articles", "Employees", "Programs", "Digests", "Reports", "Settings", "Users"):
        expect(nav.get_by_role("link", name=label)).to_be_visible()
    expect(page.get_by_test_id("signed-in-as")).to_have_text(tenant.admin_email)

    nav.get_by_role("link", name="Users").click()
    expect(page.get_by_role("cell", name=tenant.admin_email)).to_be_visible()

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/console/login$"))
    page.goto(f"{live_server}/console/settings")
    expect(page).to_have_url(re.compile(r"/console/login\?next="))


def test_wrong_password_is_refused(page, live_server, tenant, console_login):
    page.goto(f"{live_server}/console/login")
    page.get_by_label("Email").fill(tenant.admin_email)
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
