"""OWASP ASVS level 2 checks on authentication and sessions: password hashing
parameters, session cookie flags, token revocation by the user and by an HR admin
(never across organisations), login throttling. Emails masked in JSON logs:
test_logging.py."""
import re

import pytest
from sqlalchemy import select

from services.app import create_app
from shared.models import Role, User
from shared.security import hash_password, verify_password
from tests.conftest import ADMIN_PASSWORD, login_console, make_settings

# OWASP Password Storage Cheat Sheet: argon2id with at least 19 MiB memory, 2 iterations,
# parallelism 1 (or a stronger trade-off of memory for iterations).
OWASP_MIN_MEMORY_KIB, OWASP_MIN_ITERATIONS = 19 * 1024, 2


def _argon2_parameters(encoded: str) -> tuple[str, dict[str, int]]:
    match = re.fullmatch(r"\$(argon2(?:id|i|d))\$v=\d+\$m=(\d+),t=(\d+),p=(\d+)\$[^$]+\$[^$]+", encoded)
    assert match, encoded
    return match.group(1), {"m": int(match.group(2)), "t": int(match.group(3)), "p": int(match.group(4))}


def test_password_hashes_are_argon2id_at_or_above_owasp_minimum(db, tenant):
    with db.session(tenant.org_id) as session:
        stored = session.scalar(select(User.password_hash).where(User.id == tenant.admin_id))
    for encoded in (stored, hash_password("another passphrase 2026")):
        variant, params = _argon2_parameters(encoded)
        assert variant == "argon2id"
        assert params["m"] >= OWASP_MIN_MEMORY_KIB and params["t"] >= OWASP_MIN_ITERATIONS and params["p"] >= 1
    assert verify_password(stored, ADMIN_PASSWORD) and not verify_password(stored, ADMIN_PASSWORD + "x")


def _session_cookie(response) -> str:  # noqa: ANN001
    cookies = [value for value in response.headers.getlist("Set-Cookie") if value.startswith("session=")]
    assert cookies, response.headers
    return cookies[-1]


@pytest.mark.parametrize(
    ("overrides", "secure"),
    [
        ({"WELLBEING_ENV": "production"}, True),  # production: Secure even if PUBLIC_URL says http
        ({"PUBLIC_URL": "https://wellbeing.example.com"}, True),
        ({"WELLBEING_ENV": "development"}, False),  # plain-http development only
    ],
)
def test_session_cookie_is_httponly_samesite_and_secure_outside_development(database_url, broker_url, smtp_sink, db, tenant,
                                                                            overrides, secure):
    app = create_app(make_settings(database_url, broker_url, smtp_sink.port, **overrides))
    client = app.test_client()
    response = login_console(client, tenant.admin_email)
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    cookie = _session_cookie(response)
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert ("; Secure" in cookie) is secure


def test_user_revokes_own_token_and_admin_revokes_others_only_in_own_organisation(client, tenant, other_tenant, make_user):
    manager = make_user(tenant, Role.MANAGER)
    foreign = make_user(other_tenant, Role.MANAGER)
    # The HR admin lists every token of the organisation, none of another one.
    listed = client.get("/api/v1/auth/tokens?per_page=100", headers=tenant.headers).get_json()["items"]
    assert {t["user_id"] for t in listed} == {tenant.admin_id, manager.admin_id}
    foreign_id = client.get("/api/v1/auth/tokens", headers=foreign.headers).get_json()["items"][0]["id"]
    # Another organisation's token is not found, for the admin and the manager alike, and stays alive.
    for caller in (tenant, manager):
        response = client.delete(f"/api/v1/auth/tokens/{foreign_id}", headers=caller.headers)
        assert response.status_code == 404 and response.mimetype == "application/problem+json"
    assert client.get("/api/v1/me", headers=foreign.headers).status_code == 200
    # A user revokes their own token by id.
    own_id = client.get("/api/v1/auth/tokens", headers=manager.headers).get_json()["items"][0]["id"]
    assert client.delete(f"/api/v1/auth/tokens/{own_id}", headers=manager.headers).status_code == 204
    assert client.get("/api/v1/me", headers=manager.headers).status_code == 401


def test_login_throttle_answers_problem_json_with_retry_after(database_url, broker_url, smtp_sink, db, tenant):
    from services.extensions import limiter

    app = create_app(make_settings(database_url, broker_url, smtp_sink.port, LOGIN_RATE_LIMIT="2 per minute"))
    limiter.reset()
    client = app.test_client()
    # Per address: different accounts from one address.
    for n in range(2):
        client.post("/api/v1/auth/token", json={"email": f"nobody{n}@example.com", "password": "wrong-password-1"})
    blocked = client.post("/api/v1/auth/token", json={"email": tenant.admin_email, "password": ADMIN_PASSWORD})
    assert blocked.status_code == 429 and blocked.mimetype == "application/problem+json"
    assert blocked.get_json()["status"] == 429 and int(blocked.headers["Retry-After"]) >= 1
    # The console's sign-in form is throttled by the same rule (its own counters).
    statuses = [login_console(client, tenant.admin_email, "wrong-password-1").status_code for _ in range(3)]
    assert statuses[-1] == 429
