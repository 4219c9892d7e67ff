"""Outgoing mail over SMTP_URL (plain, STARTTLS or implicit TLS, optional auth)."""
from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from email.utils import make_msgid

from shared.config import Settings, SmtpSettings


@contextmanager
def smtp_connection(smtp: SmtpSettings, timeout: float = 30) -> Iterator[smtplib.SMTP]:
    """One connection, reusable for a batch of messages."""
    if smtp.use_ssl:
        client: smtplib.SMTP = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=timeout, context=ssl.create_default_context())
    else:
        client = smtplib.SMTP(smtp.host, smtp.port, timeout=timeout)
    try:
        client.ehlo()
        if smtp.starttls and client.has_extn("starttls"):
            client.starttls(context=ssl.create_default_context())
            client.ehlo()
        if smtp.username:
            client.login(smtp.username, smtp.password or "")
        yield client
    finally:
        try:
            client.quit()
        except smtplib.SMTPException:
            client.close()


def build_message(settings: Settings, to: str, subject: str, text: str, html: str | None = None, message_id: str | None = None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = message_id or make_msgid(domain=settings.mail_from.rsplit("@", 1)[-1].strip(">"))
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


def send(settings: Settings, message: EmailMessage) -> None:
    with smtp_connection(settings.smtp) as client:
        client.send_message(message)
