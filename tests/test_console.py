"""Console pages: session login with CSRF protection, roles, settings and users."""
from sqlalchemy import select

from shared.models import Organisation, Role, User
from tests.conftest import ADMIN_PASSWORD, form_token, login_console


def test_login_without_csrf_token_is_refused(client, tenant):
    response = client.post("/console/login", data={"email": tenant.admin_email, "password": ADMIN_PASSWORD})
    assert response.status_code == 400
    assert client.get("/console/").status_code == 302  # still signed out


def test_login_with_csrf_token_works_and_sets_safe_cookie(client, tenant):
    response = login_console(client, tenant.admin_email)
    assert response.status_code == 302 and response.headers["Location"] == "/console/"
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = client.get("/console/")
    assert page.status_code == 200 and "Acme Ltd" in page.get_data(as_text=True)


def test_login_refuses_open_redirect(client, tenant):
    token = form_token(client, "/console/login")
    response = client.post("/console/login?next=//evil.example/x", data={"email": tenant.admin_email, "password": ADMIN_PASSWORD, "csrf_token": token})
    assert response.headers["Location"] == "/console/"


def test_settings_form_needs_csrf_and_saves(client, tenant, db):
    login_console(client, tenant.admin_email)
    form = {"name": "Acme Group", "anonymity_k": "7", "brand_colour": "#123456", "default_timezone": "Europe/Paris"}
    assert client.post("/console/settings", data=form).status_code == 400
    form["csrf_token"] = form_token(client, "/console/settings")
    assert client.post("/console/settings", data=form).status_code == 302
    with db.session(tenant.org_id) as session:
        org = session.scalar(select(Organisation))
        assert (org.name, org.anonymity_k, org.brand_colour, org.default_timezone) == ("Acme Group", 7, "#123456", "Europe/Paris")


def test_settings_rejects_k_below_three(client, tenant):
    login_console(client, tenant.admin_email)
    form = {"name": "Acme", "anonymity_k": "2", "brand_colour": "#123456", "default_timezone": "UTC", "csrf_token": form_token(client, "/console/settings")}
    response = client.post("/console/settings", data=form)
    assert response.status_code == 400
    assert "Number must be between 3 and 100" in response.get_data(as_text=True)


def test_manager_cannot_open_admin_pages(client, tenant, make_user):
    manager = make_user(tenant, Role.MANAGER)
    login_console(client, manager.admin_email)
    assert client.get("/console/").status_code == 200
    assert client.get("/console/reports").status_code == 200
    for path in ("/console/settings", "/console/users", "/console/employees"):
        assert client.get(path).status_code == 403, path


def test_invite_and_deactivate_from_console(client, tenant, db):
    login_console(client, tenant.admin_email)
    token = form_token(client, "/console/users")
    response = client.post("/console/users", data={"email": "Newbie@Example.com", "full_name": "New Bie", "role": "manager", "csrf_token": token})
    assert response.status_code == 302
    with db.session(tenant.org_id) as session:
        user = session.scalar(select(User).where(User.email == "newbie@example.com"))
        assert user.role == Role.MANAGER and user.password_hash is None
    response = client.post(f"/console/users/{user.id}/active", data={"active": "0", "csrf_token": form_token(client, "/console/users")})
    assert response.status_code == 302
    with db.session(tenant.org_id) as session:
        assert session.get(User, user.id).is_active is False


def test_deactivation_ends_console_sessions(client, app, tenant, make_user):
    manager = make_user(tenant, Role.MANAGER)
    manager_client = app.test_client()
    login_console(manager_client, manager.admin_email)
    assert manager_client.get("/console/").status_code == 200
    login_console(client, tenant.admin_email)
    client.post(f"/console/users/{manager.admin_id}/active", data={"active": "0", "csrf_token": form_token(client, "/console/users")})
    assert manager_client.get("/console/").status_code == 302


def test_cross_tenant_console_action_is_404(client, tenant, other_tenant, db):
    login_console(client, tenant.admin_email)
    response = client.post(f"/console/users/{other_tenant.admin_id}/active", data={"active": "0", "csrf_token": form_token(client, "/console/users")})
    assert response.status_code == 404
    with db.session(other_tenant.org_id) as session:
        assert session.get(User, other_tenant.admin_id).is_active is True


def test_console_login_is_throttled_per_account(database_url, broker_url, smtp_sink, db, tenant):
    from services.app import create_app
    from services.extensions import limiter
    from tests.conftest import make_settings

    app = create_app(make_settings(database_url, broker_url, smtp_sink.port, LOGIN_RATE_LIMIT="2 per minute"))
    limiter.reset()
    client = app.test_client()
    for address in ("10.0.0.1", "10.0.0.2"):
        token = form_token(client, "/console/login")
        response = client.post("/console/login", data={"email": tenant.admin_email, "password": "wrong-password-1", "csrf_token": token}, environ_base={"REMOTE_ADDR": address})
        assert response.status_code == 401
    token = form_token(client, "/console/login")
    blocked = client.post("/console/login", data={"email": tenant.admin_email, "password": ADMIN_PASSWORD, "csrf_token": token}, environ_base={"REMOTE_ADDR": "10.0.0.3"})
    assert blocked.status_code == 429
    assert int(blocked.headers["Retry-After"]) > 0
