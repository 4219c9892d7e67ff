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
    entries = sorted(((box.get_file(k), k) for k in box.keys()), key=lambda e: Path(e[0].name).stat().st_mtime, reverse=True)
    messages = []
    for handle, key in entries[:limit]:
        with handle:
            messages.append(_parse(key, handle.read()))
    return messages


def get_message(maildir: Path, key: str) -> StoredMessage | None:
    if not maildir.exists():
        return None
    box = mailbox.Maildir(maildir, factory=None, create=False)
    try:
        with box.get_file(key) as handle:
            return _parse(key, handle.read())
    except KeyError:
        return None
