"""A local SMTP server that stores every message in a Maildir (embedded default only).
Under ``wellbeing dev`` it also plays the inbound receiver: mail to a digest's
List-Unsubscribe mailto: address is stored and unsubscribes, as in production."""
from __future__ import annotations

import argparse
import asyncio
import mailbox
import signal
import threading
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox

from shared.config import Settings
from shared.db import Database


class _UnsubscribingMailbox(Mailbox):
    def __init__(self, maildir: Path, db: Database, settings: Settings):
        super().__init__(maildir)
        self.db, self.settings = db, settings

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, N802
        from shared.domain import unsubscribe_mail

        answer = await super().handle_DATA(server, session, envelope)
        addresses = [a for a in envelope.rcpt_tos if unsubscribe_mail.is_unsubscribe_address(self.settings, a)]
        if addresses:
            await asyncio.get_running_loop().run_in_executor(None, unsubscribe_mail.apply_unsubscribes, self.db, self.settings, addresses)
        return answer


def start(maildir: Path, host: str = "127.0.0.1", port: int = 8025, unsubscribes: tuple[Database, Settings] | None = None) -> Controller:
    """``unsubscribes``: (database, settings) to apply mail to unsubscribe addresses with."""
    maildir.parent.mkdir(parents=True, exist_ok=True)
    mailbox.Maildir(maildir, create=True)  # tmp/, new/ and cur/ must exist before the first delivery
    handler = _UnsubscribingMailbox(maildir, *unsubscribes) if unsubscribes else Mailbox(str(maildir))
    controller = Controller(handler, hostname=host, port=port)
    controller.start()
    return controller


def main() -> None:
    from shared.config import load_settings

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--maildir", type=Path, required=True)
    args = parser.parse_args()
    settings = load_settings()
    db = Database(settings.database_url)
    controller = start(args.maildir, args.host, args.port, (db, settings))
    run_until_stopped(controller, f"SMTP sink listening on {args.host}:{args.port}, storing mail in {args.maildir}")
    db.dispose()


def run_until_stopped(controller: Controller, banner: str) -> None:
    """Serve until SIGTERM or SIGINT, then stop the server."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(banner, flush=True)
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
