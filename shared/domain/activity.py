"""Activity events: recorded pseudonymously and only for employees who consented to
analytics; ingestion in batches (idempotent by event id), retention and erasure.

Pseudonym = HMAC-SHA256(per-organisation key, employee id). The key is in
``analytics_keys``; the events table holds the pseudonym and the group attributes the
employee had when the event happened (department, team, manager chain as pseudonyms),
never an email, a name or an employee id."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from shared.db import utcnow
from shared.domain.digest_schedule import iso_week_of
from shared.errors import InvalidInput
from shared.models import (
    EVENT_KINDS,
    ActivityEvent,
    ActivityLine,
    AnalyticsKey,
    Employee,
    ReportCellMember,
    ReportDirtyWeek,
    ReportSettings,
)

MAX_BATCH = 1000
MAX_CHAIN = 32
DEFAULT_RETENTION_MONTHS = 13


# ---- keys and pseudonyms -------------------------------------------------------------------

def _org_id(session: Session) -> int:
    org_id = session.info.get("org_id")
    if org_id is None:
        raise RuntimeError("activity functions need a session bound to an organisation")
    return org_id


def analytics_key(session: Session) -> bytes:
    """The organisation's pseudonym key, created on first use."""
    cache = session.info.setdefault("analytics_keys", {})
    org_id = _org_id(session)
    if org_id in cache:
        return cache[org_id]
    row = session.scalar(select(AnalyticsKey))
    if row is None:
        row = AnalyticsKey(key=secrets.token_bytes(32))
        session.add(row)
        session.flush()
    cache[org_id] = row.key
    return row.key


def pseudonym(session: Session, employee_id: int) -> str:
    return hmac.new(analytics_key(session), str(employee_id).encode(), hashlib.sha256).hexdigest()


def report_settings(session: Session) -> ReportSettings:
    row = session.scalar(select(ReportSettings))
    if row is None:
        row = ReportSettings(activity_retention_months=DEFAULT_RETENTION_MONTHS, budget_spent={})
        session.add(row)
        session.flush()
    return row


def mark_dirty(session: Session, weeks: Iterable[str]) -> None:
    weeks = set(weeks)
    if not weeks:
        return
    known = set(session.scalars(select(ReportDirtyWeek.iso_week).where(ReportDirtyWeek.iso_week.in_(weeks))))
    for week in sorted(weeks - known):
        session.add(ReportDirtyWeek(iso_week=week))
    session.flush()


# ---- recording ------------------------------------------------------------------------------

@dataclass
class _Chains:
    """Manager chains of employees, loaded once per batch."""

    managers: dict[int, int | None] = field(default_factory=dict)

    def chain(self, session: Session, employee: Employee) -> list[int]:
        out: list[int] = []
        seen = {employee.id}
        current = employee.manager_id
        while current is not None and current not in seen and len(out) < MAX_CHAIN:
            out.append(current)
            seen.add(current)
            if current not in self.managers:
                self.managers[current] = session.scalar(select(Employee.manager_id).where(Employee.id == current))
            current = self.managers[current]
        return out


def _validate(kind: str, score: int | None, occurred_at: datetime) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    if kind not in EVENT_KINDS:
        errors["kind"] = [f"Must be one of: {', '.join(EVENT_KINDS)}."]
    if kind == "pulse_answered":
        if score is None or not 1 <= score <= 5:
            errors["score"] = ["A pulse answer needs a score from 1 to 5."]
    elif score is not None:
        errors["score"] = ["Only pulse_answered events have a score."]
    if occurred_at.tzinfo is None:
        errors["occurred_at"] = ["Give a timezone, e.g. 2026-11-25T09:00:00Z."]
    elif occurred_at > utcnow() + timedelta(minutes=5):
        errors["occurred_at"] = ["Must not be in the future."]
    return errors


def _insert_event(session: Session, employee: Employee, chains: _Chains, *, event_id: str, kind: str,
                  occurred_at: datetime, score: int | None, article_id: int | None, program_id: int | None,
                  topic: str | None) -> str:
    week = iso_week_of(occurred_at.astimezone(timezone.utc).date())
    event = ActivityEvent(
        event_id=event_id, kind=kind, occurred_at=occurred_at, iso_week=week,
        pseudonym=pseudonym(session, employee.id), department=employee.department or "", team=employee.team or "",
        score=score, article_id=article_id, program_id=program_id, topic=(topic or None),
    )
    session.add(event)
    session.flush()
    chain = [pseudonym(session, m) for m in chains.chain(session, employee)]
    for depth, line in enumerate(chain, start=1):
        session.add(ActivityLine(event_pk=event.id, line=line, depth=depth, iso_week=week,
                                 parent_line=chain[depth] if depth < len(chain) else None))
    return week


def record_event(session: Session, employee: Employee, kind: str, *, occurred_at: datetime | None = None,
                 event_id: str | None = None, score: int | None = None, article_id: int | None = None,
                 program_id: int | None = None, topic: str | None = None) -> bool:
    """Record what ``employee`` did, if they consented to analytics (else a no-op, False).
    Idempotent by ``event_id`` (a second call with the same id records nothing)."""
    if not employee.analytics_consent:
        return False
    occurred_at = occurred_at or utcnow()
    errors = _validate(kind, score, occurred_at)
    if errors:
        raise InvalidInput("The event is not valid.", errors=errors)
    event_id = event_id or f"auto-{secrets.token_hex(16)}"
    if session.scalar(select(ActivityEvent.id).where(ActivityEvent.event_id == event_id)) is not None:
        return False
    week = _insert_event(session, employee, _Chains(), event_id=event_id, kind=kind, occurred_at=occurred_at,
                         score=score, article_id=article_id, program_id=program_id, topic=topic)
    mark_dirty(session, [week])
    return True


@dataclass
class IngestResult:
    accepted: int = 0
    duplicate: int = 0
    ignored_no_consent: int = 0
    errors: list[dict] = field(default_factory=list)


def ingest(session: Session, items: list[Mapping]) -> IngestResult:
    """Record a batch (already shape-validated: event_id, kind, employee_id, occurred_at,
    score, article_id, program_id, topic). Items with errors are reported by index and
    skipped; the others are recorded."""
    if len(items) > MAX_BATCH:
        raise InvalidInput(f"A batch holds at most {MAX_BATCH} events.", errors={"events": [f"At most {MAX_BATCH} events."]})
    result = IngestResult()
    ids = {item["event_id"] for item in items}
    existing = set()
    id_list = list(ids)
    for start in range(0, len(id_list), 500):
        existing |= set(session.scalars(select(ActivityEvent.event_id).where(ActivityEvent.event_id.in_(id_list[start:start + 500]))))
    employee_ids = list({item["employee_id"] for item in items})
    employees: dict[int, Employee] = {}
    for start in range(0, len(employee_ids), 500):
        for e in session.scalars(select(Employee).where(Employee.id.in_(employee_ids[start:start + 500]))):
            employees[e.id] = e
    chains = _Chains()
    seen: set[str] = set()
    weeks: set[str] = set()
    for index, item in enumerate(items):
        errors = _validate(item["kind"], item.get("score"), item["occurred_at"])
        employee = employees.get(item["employee_id"])
        if employee is None:
            errors["employee_id"] = ["No such employee in this organisation."]
        if errors:
            result.errors.append({"index": index, "event_id": item["event_id"], "errors": errors})
            continue
        if item["event_id"] in existing or item["event_id"] in seen:
            result.duplicate += 1
            continue
        seen.add(item["event_id"])
        if not employee.analytics_consent:
            result.ignored_no_consent += 1
            continue
        weeks.add(_insert_event(
            session, employee, chains, event_id=item["event_id"], kind=item["kind"], occurred_at=item["occurred_at"],
            score=item.get("score"), article_id=item.get("article_id"), program_id=item.get("program_id"),
            topic=item.get("topic"),
        ))
        result.accepted += 1
    session.flush()
    mark_dirty(session, weeks)
    return result


# ---- retention and erasure -----------------------------------------------------------------

def _months_ago(now: datetime, months: int) -> datetime:
    year, month = divmod(now.year * 12 + (now.month - 1) - months, 12)
    day = min(now.day, 28)
    return now.replace(year=year, month=month + 1, day=day)


def purge_expired(session: Session, now: datetime | None = None) -> int:
    """Delete raw events older than the organisation's retention (built report cells stay)."""
    settings = report_settings(session)
    cutoff = _months_ago(now or utcnow(), settings.activity_retention_months)
    old = select(ActivityEvent.id).where(ActivityEvent.occurred_at < cutoff)
    session.execute(delete(ActivityLine).where(ActivityLine.event_pk.in_(old)).execution_options(synchronize_session=False))
    result = session.execute(delete(ActivityEvent).where(ActivityEvent.occurred_at < cutoff).execution_options(synchronize_session=False))
    return result.rowcount or 0


def erase_employee_activity(session: Session, employee_id: int) -> int:
    """Erasure (GDPR art. 17): delete the employee's raw events and their place in built
    report cells; the weeks they touched are rebuilt by the next aggregation."""
    who = pseudonym(session, employee_id)
    weeks = set(session.scalars(select(ActivityEvent.iso_week).where(ActivityEvent.pseudonym == who).distinct()))
    mine = select(ActivityEvent.id).where(ActivityEvent.pseudonym == who)
    session.execute(delete(ActivityLine).where(ActivityLine.event_pk.in_(mine)).execution_options(synchronize_session=False))
    result = session.execute(delete(ActivityEvent).where(ActivityEvent.pseudonym == who).execution_options(synchronize_session=False))
    session.execute(delete(ReportCellMember).where(ReportCellMember.pseudonym == who).execution_options(synchronize_session=False))
    mark_dirty(session, weeks)
    return result.rowcount or 0


def _register_erasure_hook() -> None:
    from shared.domain import employees

    if erase_employee_activity not in employees.ERASURE_HOOKS:
        employees.ERASURE_HOOKS.append(erase_employee_activity)


_register_erasure_hook()


# ---- events from the product's own records -------------------------------------------------

SYNC_DAYS = 14


def sync_product_events(session: Session, now: datetime | None = None, days: int = SYNC_DAYS) -> IngestResult:
    """Record activity the product itself saw (digests sent, pulse answers, enrolments) in the
    last ``days``, by deterministic event ids, so running it again records nothing twice.
    Employees without analytics consent are skipped like any other event."""
    from shared.models import DigestSend, EnrolmentEvent, PulseResponse, SendState

    since = (now or utcnow()) - timedelta(days=days)
    items: list[dict] = []
    for send_id, employee_id, sent_at in session.execute(
        select(DigestSend.id, DigestSend.employee_id, DigestSend.sent_at)
        .where(DigestSend.state == SendState.SENT, DigestSend.sent_at >= since)
    ):
        items.append({"event_id": f"digest-send-{send_id}", "kind": "digest_delivered", "employee_id": employee_id, "occurred_at": sent_at})
    for pulse_id, employee_id, answered_at, score in session.execute(
        select(PulseResponse.id, PulseResponse.employee_id, PulseResponse.answered_at, PulseResponse.score)
        .where(PulseResponse.answered_at >= since)
    ):
        items.append({"event_id": f"pulse-{pulse_id}", "kind": "pulse_answered", "employee_id": employee_id,
                      "occurred_at": answered_at, "score": score})
    for event_id, employee_id, at, program_id in session.execute(
        select(EnrolmentEvent.id, EnrolmentEvent.employee_id, EnrolmentEvent.at, EnrolmentEvent.program_id)
        .where(EnrolmentEvent.action.in_(("enrolled", "promoted")), EnrolmentEvent.at >= since)
    ):
        items.append({"event_id": f"enrolment-{event_id}", "kind": "program_enrolled", "employee_id": employee_id,
                      "occurred_at": at, "program_id": program_id})
    total = IngestResult()
    for start in range(0, len(items), MAX_BATCH):
        part = ingest(session, items[start:start + MAX_BATCH])
        total.accepted += part.accepted
        total.duplicate += part.duplicate
        total.ignored_no_consent += part.ignored_no_consent
        total.errors += part.errors
    return total
