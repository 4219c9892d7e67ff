"""An HR admin invites a manager: a real worker sends the mail over real SMTP, and the
link in it lets the manager set a password and sign in."""
import re

from tests.conftest import ADMIN_PASSWORD, form_token


def test_invitation_round_trip(client, tenant, smtp_sink, celery_worker):
    response = client.post(
        "/api/v1/users", json={"email": "Manager@Example.com", "full_name": "Mia Manager", "role": "manager"}, headers=tenant.headers
    )
    assert response.status_code == 201
    user = response.get_json()
    assert user["id"] > 0 and user["email"] == "manager@example.com" and user["invitation_pending"] is True

    [message] = smtp_sink.wait_for(1)
    assert message["To"] == "manager@example.com"
    assert "Acme Ltd" in message["Subject"]
    link = re.search(r"http://wellbeing\.test(/console/invite/\S+)", message.get_content()).group(1)

    assert client.post("/api/v1/auth/token", json={"email": "manager@example.com", "password": ADMIN_PASSWORD}).status_code == 401
    page = client.get(link)
    assert page.status_code == 200 and "Set your password" in page.get_data(as_text=True)
    assert client.post(link, data={"password": ADMIN_PASSWORD}).status_code == 400  # no CSRF token
    assert client.post(link, data={"password": ADMIN_PASSWORD, "csrf_token": form_token(client, link)}).status_code == 302
    token = client.post("/api/v1/auth/token", json={"email": "manager@example.com", "password": ADMIN_PASSWORD})
    assert token.status_code == 201

    # The link works once only.
    client.post(link, data={"password": "another-long-password", "csrf_token": form_token(client, link)})
    assert client.post("/api/v1/auth/token", json={"email": "manager@example.com", "password": "another-long-password"}).status_code == 401


def test_forged_invitation_link_is_refused(client, tenant):
    forged = "/console/invite/eyJ1c2VyX2lkIjoxfQ.forged.signature"
    response = client.post(forged, data={"password": ADMIN_PASSWORD, "csrf_token": form_token(client, forged)})
    assert response.status_code == 200
    assert "invalid, used or expired" in response.get_data(as_text=True)
