"""``wellbeing mail-inbound``: a small SMTP receiver for List-Unsubscribe mailto: addresses.

Point the inbound domain's MX (or a relay's transport for ``unsubscribe+*@domain``) at it.
It accepts mail only for valid ``unsubscribe+<token>@<MAIL_INBOUND_DOMAIN>`` recipients
(anything else is refused at RCPT time, so it is no relay and no mailbox) and applies
the unsubscribe when the message is handed over; the message body is discarded."""
from __future__ import annotations

import asyncio
import logging

from aiosmtpd.controller import Controller

from shared.config import Settings
from shared.db import Database
from shared.domain import digest_render, unsubscribe_mail

log = logging.getLogger(__name__)
# An unsubscribe request needs no body worth keeping: refuse big messages early.
MAX_MESSAGE_BYTES = 256 * 1024


class UnsubscribeHandler:
    def __init__(self, db: Database, settings: Settings):
        self.db = db
        self.settings = settings

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001, N802
        if not unsubscribe_mail.is_unsubscribe_address(self.settings, address):
            return "550 5.1.1 No such recipient here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, N802
        try:
            # Database work off the event loop, so one slow commit does not stall other clients.
            await asyncio.get_running_loop().run_in_executor(
                None, unsubscribe_mail.apply_unsubscribes, self.db, self.settings, list(envelope.rcpt_tos))
        except Exception:  # noqa: BLE001 - the sender retries a 4xx; nothing is lost
            log.exception("could not apply an unsubscribe by email")
            return "451 4.3.0 Temporary failure, try again later"
        return "250 OK unsubscribed"


def start(db: Database, settings: Settings, host: str | None = None, port: int | None = None) -> Controller:
    controller = Controller(
        UnsubscribeHandler(db, settings),
        hostname=host or settings.mail_inbound_host,
        port=port if port is not None else settings.mail_inbound_port,
        server_hostname=settings.mail_inbound_domain or None,
        data_size_limit=MAX_MESSAGE_BYTES,
    )
    controller.start()
    return controller


def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT."""
    from services.smtp_sink import run_until_stopped

    db = Database(settings.database_url)
    controller = start(db, settings)
    run_until_stopped(controller, f"Unsubscribe mail receiver listening on {settings.mail_inbound_host}:{settings.mail_inbound_port}"
                                  f" for unsubscribe+...@{digest_render.inbound_domain(settings)}")
    db.dispose()
