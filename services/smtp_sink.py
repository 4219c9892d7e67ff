"""A local SMTP server that stores every message in a Maildir (embedded default only)."""
from __future__ import annotations

import argparse
import mailbox
import signal
import threading
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox


def start(maildir: Path, host: str = "127.0.0.1", port: int = 8025) -> Controller:
    maildir.parent.mkdir(parents=True, exist_ok=True)
    mailbox.Maildir(maildir, create=True)  # tmp/, new/ and cur/ must exist before the first delivery
    controller = Controller(Mailbox(str(maildir)), hostname=host, port=port)
    controller.start()
    return controller


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--maildir", type=Path, required=True)
    args = parser.parse_args()
    controller = start(args.maildir, args.host, args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"SMTP sink listening on {args.host}:{args.port}, storing mail in {args.maildir}", flush=True)
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
