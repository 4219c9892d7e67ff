"""The development mailbox: the SMTP sink stores real mail in a Maildir that the
console shows (development only)."""
from services.app import create_app
from services.smtp_sink import start as start_sink
from shared import mail
from tests.conftest import free_port, form_token, make_settings


def test_sink_stores_mail_and_console_shows_it(database_url, broker_url, db, tenant, tmp_path):
    port = free_port()
    settings = make_settings(database_url, broker_url, port, WELLBEING_ENV="development", WELLBEING_DATA_DIR=str(tmp_path))
    sink = start_sink(settings.mailbox_dir, "127.0.0.1", port)
    try:
        html = '<p>Hello <b>there</b></p><script>alert(1)</script>'
        mail.send(settings, mail.build_message(settings, "someone@example.com", "Your weekly digest", "Hello there", html))
    finally:
        sink.stop()

    client = create_app(settings).test_client()
    token = form_token(client, "/console/login")
    client.post("/console/login", data={"email": tenant.admin_email, "password": "correct-horse-battery", "csrf_token": token})
    listing = client.get("/console/mailbox").get_data(as_text=True)
    assert "Your weekly digest" in listing and "someone@example.com" in listing
    key = listing.split('/console/mailbox/')[1].split('"')[0]
    message = client.get(f"/console/mailbox/{key}").get_data(as_text=True)
    assert "Hello there" in message
    assert "sandbox srcdoc=" in message  # the HTML part cannot run scripts
    assert "<script>alert(1)</script>" not in message


def test_mailbox_does_not_exist_outside_development(client, tenant):
    token = form_token(client, "/console/login")
    client.post("/console/login", data={"email": tenant.admin_email, "password": "correct-horse-battery", "csrf_token": token})
    assert client.get("/console/mailbox").status_code == 404
