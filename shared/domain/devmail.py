"""Read the development SMTP sink's Maildir (what ``wellbeing dev`` delivers to)."""
from __future__ import annotations

import mailbox
from dataclasses import dataclass
from email import policy
from email.parser import BytesParser
from pathlib import Path


@dataclass(frozen=True)
class StoredMessage:
    key: str
    sender: str
    to: str
    subject: str
    date: str
    text: str
    html: str | None
    headers: list[tuple[str, str]]


def _parse(key: str, raw: bytes) -> StoredMessage:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    text_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    return StoredMessage(
        key=key,
        sender=str(message.get("From", "")),
        to=str(message.get("To", "")),
        subject=str(message.get("Subject", "")),
        date=str(message.get("Date", "")),
        text=text_part.get_content() if text_part else "",
        html=html_part.get_content() if html_part else None,
        headers=[(k, str(v)) for k, v in message.items()],
    )


def list_messages(maildir: Path, limit: int = 200) -> list[StoredMessage]:
    if not maildir.exists():
        return []
    box = mailbox.Maildir(maildir, factory=None, create=False)
    # Maildir keys start with the delivery time in seconds: newest first.
    keys = sorted(box.keys(), key=lambda k: (int(k.split(".", 1)[0]) if k.split(".", 1)[0].isdigit() else 0, k), reverse=True)
    return [_parse(key, box.get_bytes(key)) for key in keys[:limit]]


def get_message(maildir: Path, key: str) -> StoredMessage | None:
    if not maildir.exists():
        return None
    box = mailbox.Maildir(maildir, factory=None, create=False)
    try:
        return _parse(key, box.get_bytes(key))
    except KeyError:
        return None
