"""Rotating SECRET_KEY with SECRET_KEY_FALLBACKS: links already sent (preference centre,
one-click and mailto unsubscribe) keep working while the old key is listed, new links
use the new key, and once the old key is dropped its links stop working."""
from __future__ import annotations

from services.app import create_app
from shared.domain import digest_render, employees
from shared.models import Employee
from tests.conftest import make_settings

NEW_KEY = "rotated-secret-key-fedcba9876543210"
NEWER_KEY = "another-secret-key-0011223344556677"


def _employee(client, db, tenant) -> Employee:  # noqa: ANN001
    body = {"external_id": "R1", "email": "rotation@example.com", "first_name": "Rae", "last_name": "Tate", "digest_consent": True}
    employee_id = client.post("/api/v1/employees", json=body, headers=tenant.headers).get_json()["id"]
    with db.session(tenant.org_id) as session:
        employee = session.get(Employee, employee_id)
        session.expunge(employee)
    return employee


def test_links_signed_before_a_rotation_work_while_the_old_key_is_a_fallback(client, db, tenant, settings):  # noqa: ANN001
    employee = _employee(client, db, tenant)
    old_key = settings.secret_key
    preference = employees.preference_token(old_key, employee)
    unsubscribe = digest_render.unsubscribe_token(old_key, employee)
    mailto = digest_render.unsubscribe_address(settings, employee)

    def rotated(key: str, **fallbacks: str):  # noqa: ANN202
        return make_settings(settings.database_url, settings.broker_url, settings.smtp.port, SECRET_KEY=key, **fallbacks)

    during = rotated(NEW_KEY, SECRET_KEY_FALLBACKS=old_key)
    browser = create_app(during).test_client()
    assert browser.get(f"/p/{preference}").status_code == 200
    assert digest_render.read_unsubscribe_address(during, mailto) is not None
    fresh = employees.preference_token(NEW_KEY, employee)
    assert fresh != preference and browser.get(f"/p/{fresh}").status_code == 200
    assert browser.post(f"/u/{unsubscribe}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
    with db.session(tenant.org_id) as session:
        assert session.get(Employee, employee.id).digest_consent is False

    after = rotated(NEWER_KEY)
    browser = create_app(after).test_client()
    assert browser.get(f"/p/{preference}").status_code == 404
    assert digest_render.read_unsubscribe_address(after, mailto) is None


def test_link_tokens_are_itsdangerous_tokens_both_ways():
    """Signing is tuned (one signer, its key derived once, no zlib for short payloads), not
    changed: links signed before verify, and plain itsdangerous reads the new ones."""
    from itsdangerous import URLSafeTimedSerializer

    from shared.security import LinkSigner

    ours = LinkSigner(NEW_KEY, "digest-unsubscribe")
    stock = URLSafeTimedSerializer(NEW_KEY, salt="wellbeing.digest-unsubscribe")
    short, long = {"o": 1, "e": 2, "v": 0}, {"o": 1, "note": "x" * 400}
    for payload in (short, long):
        assert stock.loads(ours.sign(payload)) == payload
        assert ours.verify(stock.dumps(payload), 60) == payload
    assert stock.dumps(long).startswith(".") and ours.sign(long).startswith(".")  # long payloads still compressed
    payload, timestamp, signature = ours.sign(short).split(".")
    assert ours.verify(f"{payload}x.{timestamp}.{signature}", 60) is None
    assert LinkSigner(NEWER_KEY, "digest-unsubscribe").verify(ours.sign(short), 60) is None
    assert LinkSigner(NEW_KEY, "digest-pulse").verify(ours.sign(short), 60) is None
