"""Bearer tokens: issue, expiry, revocation; login throttling."""
from datetime import timedelta

from sqlalchemy import select

from shared.db import utcnow
from shared.models import ApiToken, Role
from shared.security import token_digest
from tests.conftest import ADMIN_PASSWORD, make_settings


def _login(client, email, password=ADMIN_PASSWORD):
    return client.post("/api/v1/auth/token", json={"email": email, "password": password})


def test_token_issue_and_use(client, tenant):
    response = _login(client, tenant.admin_email.upper())
    assert response.status_code == 201
    body = response.get_json()
    assert body["token_type"] == "Bearer" and body["id"] > 0 and len(body["access_token"]) > 30
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.get_json()["user"]["email"] == tenant.admin_email
    assert me.get_json()["organisation"]["id"] == tenant.org_id


def test_token_is_stored_hashed(client, tenant, db):
    token = _login(client, tenant.admin_email).get_json()["access_token"]
    with db.session(tenant.org_id) as session:
        hashes = list(session.scalars(select(ApiToken.token_hash)))
    assert token not in hashes
    assert token_digest(token) in hashes


def test_wrong_password_and_unknown_user_are_401(client, tenant):
    for email, password in ((tenant.admin_email, "wrong-password-123"), ("nobody@example.com", ADMIN_PASSWORD)):
        response = _login(client, email, password)
        assert response.status_code == 401
        assert response.mimetype == "application/problem+json"
        assert response.get_json()["detail"] == "Wrong email or password."


def test_missing_or_garbage_token_is_401(client, tenant):
    assert client.get("/api/v1/users").status_code == 401
    response = client.get("/api/v1/users", headers={"Authorization": "Bearer not-a-token"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_expired_token_is_refused(client, tenant, db):
    with db.session(tenant.org_id) as session:
        record = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_digest(tenant.token)))
        record.expires_at = utcnow() - timedelta(seconds=1)
    assert client.get("/api/v1/users", headers=tenant.headers).status_code == 401


def test_token_use_is_recorded_to_the_minute(client, tenant, db):
    def last_used():
        with db.session(tenant.org_id) as session:
            return session.scalar(select(ApiToken.last_used_at).where(ApiToken.token_hash == token_digest(tenant.token)))

    assert client.get("/api/v1/users", headers=tenant.headers).status_code == 200
    first = last_used()
    assert first is not None and utcnow() - first < timedelta(minutes=1)
    assert client.get("/api/v1/users", headers=tenant.headers).status_code == 200
    assert last_used() == first  # within the minute: no write
    with db.session(tenant.org_id) as session:
        record = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_digest(tenant.token)))
        record.last_used_at = first - timedelta(minutes=2)
    assert client.get("/api/v1/users", headers=tenant.headers).status_code == 200
    assert last_used() > first


def test_logout_revokes_the_token(client, tenant):
    assert client.delete("/api/v1/auth/token", headers=tenant.headers).status_code == 204
    assert client.get("/api/v1/me", headers=tenant.headers).status_code == 401


def test_hr_admin_revokes_another_users_token_manager_cannot(client, tenant, make_user):
    manager = make_user(tenant, Role.MANAGER)
    tokens = client.get("/api/v1/auth/tokens", headers=manager.headers).get_json()["items"]
    assert [t["user_id"] for t in tokens] == [manager.admin_id]  # managers see only their own
    admin_token_id = client.get("/api/v1/auth/tokens", headers=tenant.headers).get_json()["items"]
    admin_own = next(t["id"] for t in admin_token_id if t["user_id"] == tenant.admin_id)
    assert client.delete(f"/api/v1/auth/tokens/{admin_own}", headers=manager.headers).status_code == 403
    assert client.delete(f"/api/v1/auth/tokens/{tokens[0]['id']}", headers=tenant.headers).status_code == 204
    assert client.get("/api/v1/me", headers=manager.headers).status_code == 401


def test_deactivating_a_user_kills_their_tokens(client, tenant, make_user):
    manager = make_user(tenant, Role.MANAGER)
    response = client.patch(f"/api/v1/users/{manager.admin_id}", json={"is_active": False}, headers=tenant.headers)
    assert response.status_code == 200 and response.get_json()["is_active"] is False
    assert client.get("/api/v1/me", headers=manager.headers).status_code == 401
    assert _login(client, manager.admin_email).status_code == 401


def test_cannot_deactivate_yourself(client, tenant):
    response = client.patch(f"/api/v1/users/{tenant.admin_id}", json={"is_active": False}, headers=tenant.headers)
    assert response.status_code == 409


def test_login_is_rate_limited_per_address_and_account(database_url, broker_url, smtp_sink, db, make_tenant):
    from services.app import create_app
    from services.extensions import limiter

    tenant = make_tenant()
    app = create_app(make_settings(database_url, broker_url, smtp_sink.port, LOGIN_RATE_LIMIT="3 per minute"))
    limiter.reset()
    client = app.test_client()
    statuses = [_login(client, tenant.admin_email, "wrong-password-123").status_code for _ in range(3)]
    assert statuses == [401, 401, 401]
    blocked = _login(client, tenant.admin_email)  # even the right password is throttled now
    assert blocked.status_code == 429
    assert blocked.mimetype == "application/problem+json"
    assert int(blocked.headers["Retry-After"]) > 0

    # Per account: the same email from another address is throttled too.
    other_address = client.post(
        "/api/v1/auth/token",
        json={"email": tenant.admin_email, "password": ADMIN_PASSWORD},
        environ_base={"REMOTE_ADDR": "10.1.2.3"},
    )
    assert other_address.status_code == 429
