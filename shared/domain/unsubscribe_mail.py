"""Unsubscribing by email: the ``mailto:`` half of a digest's List-Unsubscribe header.

A digest names ``unsubscribe+<token>@<inbound domain>`` (see
:func:`digest_render.unsubscribe_address`). Mail to such an address reaches the inbound
receiver (``wellbeing mail-inbound``, or the development SMTP sink), which hands the
envelope recipients here; each valid address unsubscribes its employee exactly as the
RFC 8058 one-click POST does. The message itself is not read: the signed address is the
credential, whoever sends to it."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from shared.config import Settings
from shared.db import Database
from shared.domain import digest_render, digests
from shared.errors import NotFound

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InboundOutcome:
    address: str
    employee_id: int | None  # None: not one of our addresses, forged, expired or revoked
    applied: bool  # False for preview addresses (test sends) and unknown addresses


def is_unsubscribe_address(settings: Settings, address: str) -> bool:
    return digest_render.read_unsubscribe_address(settings, address) is not None


def apply_unsubscribes(db: Database, settings: Settings, recipients: list[str]) -> list[InboundOutcome]:
    """Unsubscribe the employee behind each valid unsubscribe address among ``recipients``."""
    outcomes = []
    for address in recipients:
        link = digest_render.read_unsubscribe_address(settings, address)
        if link is None:
            outcomes.append(InboundOutcome(address, None, False))
            continue
        with db.session(link.org_id) as session:
            try:
                employee = digests.unsubscribe(session, link)
            except NotFound:  # erased, or the employee's links were revoked
                outcomes.append(InboundOutcome(address, None, False))
                continue
            outcomes.append(InboundOutcome(address, employee.id, not link.preview))
        log.info("unsubscribed by email", extra={"org_id": link.org_id, "employee_id": link.employee_id, "preview": link.preview})
    return outcomes
