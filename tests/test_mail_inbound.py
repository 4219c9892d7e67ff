"""The List-Unsubscribe mailto: address works: mail to it, received by a real aiosmtpd
server on loopback (``wellbeing mail-inbound``, and the development SMTP sink), applies
the same unsubscribe as the RFC 8058 one-click POST. Forged, foreign, expired and
revoked addresses change nothing."""
from __future__ import annotations

import re
import smtplib
from datetime import date, timedelta
from email.message import EmailMessage

import pytest

from services import mail_inbound, smtp_sink
from shared.domain import digest_render, digests, employees
from shared.models import ConsentKind, ConsentSource, Employee
from tests.conftest import free_port, make_settings
from tests.digest_support import add_article, add_employees


@pytest.fixture
def inbound(db, settings):  # noqa: ANN001
    port = free_port()
    controller = mail_inbound.start(db, settings, "127.0.0.1", port)
    yield port
    controller.stop()


def _send(port: int, recipient: str) -> dict:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "someone@mail.example", recipient, "unsubscribe"
    message.set_content("Please unsubscribe me.")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        return client.send_message(message)


def _consent(db, org_id: int, employee_id: int) -> bool:  # noqa: ANN001
    with db.session(org_id) as session:
        return session.get(Employee, employee_id).digest_consent


def _mailto(header: str) -> str:
    return re.search(r"<mailto:([^?>]+)\?subject=unsubscribe>", header).group(1)


def test_mail_to_the_digest_mailto_address_unsubscribes(db, settings, tenant, smtp_sink, inbound):
    reader, other = add_employees(db, tenant.org_id, 2)
    add_article(db, tenant.org_id, "Something")
    with db.session(tenant.org_id) as session:
        _, batches = digests.start_run(session, None, "2026-W48")
    for batch in batches:
        digests.process_batch(db, settings, tenant.org_id, batch, "test-worker")
    message = next(m for m in smtp_sink.wait_for(2) if m["To"] == "e0@staff.example")
    address = _mailto(message["List-Unsubscribe"])
    assert address.startswith("unsubscribe+") and address.endswith("@test.example") and len(address.split("@")[0]) <= 64

    assert _send(inbound, address) == {}  # accepted
    assert _consent(db, tenant.org_id, reader) is False and _consent(db, tenant.org_id, other) is True
    with db.session(tenant.org_id) as session:
        latest = employees.consents_of(session, reader)
        assert any(c.kind == ConsentKind.DIGEST_EMAILS and not c.granted and c.source == ConsentSource.EMPLOYEE_LINK for c in latest)
    # Mail systems may change the address's case on the way: it still works (and again is harmless).
    assert _send(inbound, address.upper()) == {}


def test_forged_foreign_and_unknown_addresses_are_refused(db, settings, tenant, other_tenant, inbound):
    (victim,) = add_employees(db, tenant.org_id, 1)
    with db.session(tenant.org_id) as session:
        address = digest_render.unsubscribe_address(settings, session.get(Employee, victim))
    local, domain = address.split("@")
    body, mac = local.rsplit("-", 1)
    forged = [
        f"{body}-{'a' * len(mac)}@{domain}",  # a made-up signature
        f"{body.replace(f'{tenant.org_id}-', f'{other_tenant.org_id}-', 1)}-{mac}@{domain}",  # another organisation
        f"{local}@elsewhere.example",  # our token at a domain we do not receive for
        f"postmaster@{domain}",
    ]
    for recipient in forged:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            _send(inbound, recipient)
        assert refused.value.recipients[recipient][0] == 550
    assert _consent(db, tenant.org_id, victim) is True
    # A token signed with another secret is refused too.
    stranger = make_settings(settings.database_url, settings.broker_url, 25, SECRET_KEY="some-other-secret-0123456789")
    with db.session(tenant.org_id) as session:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            _send(inbound, digest_render.unsubscribe_address(stranger, session.get(Employee, victim)))
    assert _consent(db, tenant.org_id, victim) is True


def test_preview_revoked_and_expired_addresses_change_nothing(db, settings, tenant, inbound):
    previewed, revoked = add_employees(db, tenant.org_id, 2)
    with db.session(tenant.org_id) as session:
        preview_address = digest_render.unsubscribe_address(settings, session.get(Employee, previewed), preview=True)
        revoked_address = digest_render.unsubscribe_address(settings, session.get(Employee, revoked))
        employees.revoke_links(session, None, revoked)
    assert _send(inbound, preview_address) == {}  # the test digest's address: accepted, inert
    assert _send(inbound, revoked_address) == {}  # signature fine, but the employee's links were revoked
    assert _consent(db, tenant.org_id, previewed) is True and _consent(db, tenant.org_id, revoked) is True
    with db.session(tenant.org_id) as session:
        old = digest_render.unsubscribe_address(settings, session.get(Employee, previewed), today=date.today() - timedelta(days=400))
    assert digest_render.read_unsubscribe_address(settings, old) is None
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        _send(inbound, old)


def test_inbound_domain_setting(db, settings, tenant):
    (employee_id,) = add_employees(db, tenant.org_id, 1)
    custom = make_settings(settings.database_url, settings.broker_url, 25, MAIL_INBOUND_DOMAIN="Bounce.Wellbeing.Example")
    with db.session(tenant.org_id) as session:
        address = digest_render.unsubscribe_address(custom, session.get(Employee, employee_id))
    assert address.endswith("@bounce.wellbeing.example")
    assert digest_render.read_unsubscribe_address(custom, address).employee_id == employee_id
    assert digest_render.read_unsubscribe_address(settings, address) is None  # not the domain these settings receive for


def test_development_sink_stores_the_mail_and_unsubscribes(db, settings, tenant, tmp_path):
    (employee_id,) = add_employees(db, tenant.org_id, 1)
    with db.session(tenant.org_id) as session:
        address = digest_render.unsubscribe_address(settings, session.get(Employee, employee_id))
    port = free_port()
    controller = smtp_sink.start(tmp_path / "mailbox", "127.0.0.1", port, (db, settings))
    try:
        assert _send(port, "anyone@example.com") == {}  # an ordinary message: stored, nothing else
        assert _consent(db, tenant.org_id, employee_id) is True
        assert _send(port, address) == {}
    finally:
        controller.stop()
    assert _consent(db, tenant.org_id, employee_id) is False
    assert len(list((tmp_path / "mailbox" / "new").iterdir())) == 2
