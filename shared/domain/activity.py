"""Activity events: recorded pseudonymously and only for employees who consented to
analytics; ingestion in batches (idempotent by event id), retention and erasure.

Pseudonym = HMAC-SHA256(per-organisation key, employee id). The key is in
``analytics_keys``; the events table holds the pseudonym and the group attributes the
employee had when the event happened (department, team, direct manager as a pseudonym;
the week's reporting-line tree in ``activity_lines``), never an email, a name or an
employee id. ``rotate_key`` replaces the key and re-pseudonymises current employees."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import TypeVar

from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared.db import utcnow
from shared.domain.digest_schedule import iso_week_of, week_start
from shared.errors import InvalidInput
from shared.models import (
    EVENT_KINDS,
    ActivityEvent,
    ActivityLine,
    AnalyticsKey,
    Article,
    DigestItem,
    DigestSend,
    Employee,
    ReleaseLog,
    ReportDirtyWeek,
    ReportPersonWeek,
    ReportSettings,
)

MAX_BATCH = 1000
MAX_CHAIN = 32
DEFAULT_RETENTION_MONTHS = 13
_Row = TypeVar("_Row", AnalyticsKey, ReportSettings)
EPOCH_MONDAY = date(1970, 1, 5)


def week_number(iso_week: str) -> int:
    """Weeks since 1970-01-05: consecutive ISO weeks have consecutive numbers, so a window of
    n weeks ending with week w is ``week_no BETWEEN w - n + 1 AND w`` in SQL."""
    return (week_start(iso_week) - EPOCH_MONDAY).days // 7


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
    row = _one_per_organisation(session, AnalyticsKey, lambda: AnalyticsKey(key=secrets.token_bytes(32)))
    cache[org_id] = row.key
    return row.key


def pseudonym(session: Session, employee_id: int) -> str:
    return hmac.new(analytics_key(session), str(employee_id).encode(), hashlib.sha256).hexdigest()


def report_settings(session: Session) -> ReportSettings:
    return _one_per_organisation(
        session, ReportSettings, lambda: ReportSettings(activity_retention_months=DEFAULT_RETENTION_MONTHS, budget_spent={}))


def _one_per_organisation(session: Session, model: type[_Row], make: Callable[[], _Row]) -> _Row:
    """The organisation's row of ``model``, created on first use. Two requests that both
    find none race to insert it; the loser's insert fails on the unique org_id in a
    savepoint and it reads the winner's row instead of answering 409."""
    row = session.scalar(select(model))
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = make()
            session.add(row)
    except IntegrityError:
        row = session.scalar(select(model))
        if row is None:
            raise
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


def _record_lines(session: Session, week: str, chain: list[str]) -> None:
    """Add the chain's manager -> next manager edges to the week's reporting-line tree
    (first recording of a line in a week wins; concurrent writers skip duplicates)."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    recorded = session.info.setdefault("recorded_lines", set())
    org_id = _org_id(session)
    rows = [
        {"org_id": org_id, "iso_week": week, "week_no": week_number(week), "line": line,
         "parent_line": chain[depth + 1] if depth + 1 < len(chain) else None}
        for depth, line in enumerate(chain)
        if (org_id, week, line) not in recorded
    ]
    if rows:
        session.execute(dialect.insert(ActivityLine).values(rows).on_conflict_do_nothing())
        recorded.update((org_id, week, row["line"]) for row in rows)


def _insert_event(session: Session, employee: Employee, chains: _Chains, *, event_id: str, kind: str,
                  occurred_at: datetime, score: int | None, article_id: int | None, program_id: int | None,
                  topic: str | None) -> str:
    week = iso_week_of(occurred_at.astimezone(timezone.utc).date())
    chain = [pseudonym(session, m) for m in chains.chain(session, employee)]
    session.add(ActivityEvent(
        event_id=event_id, kind=kind, occurred_at=occurred_at, iso_week=week,
        pseudonym=pseudonym(session, employee.id), department=employee.department or "", team=employee.team or "",
        manager=chain[0] if chain else "", score=score, article_id=article_id, program_id=program_id,
        topic=(topic or None),
    ))
    _record_lines(session, week, chain)
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


def _derived_event_id(session: Session, employee: Employee, *parts: object) -> str:
    """An event id for something that counts once (a digest clicked, an article read), derived
    from the person's pseudonym and the thing, so nothing in it links back to the product's
    own records (send or employee ids)."""
    digest = hashlib.sha256("|".join([pseudonym(session, employee.id), *map(str, parts)]).encode()).hexdigest()
    return f"{parts[0]}-{digest[:48]}"


def _record_once(session: Session, employee: Employee, kind: str, event_id: str, **fields) -> bool:  # noqa: ANN003
    """record_event, where a concurrent duplicate (two reloads at once) is a no-op, not an error."""
    try:
        with session.begin_nested():
            return record_event(session, employee, kind, event_id=event_id, **fields)
    except IntegrityError:
        return False


def record_digest_click(session: Session, employee: Employee, iso_week: str) -> bool:
    """A link in the employee's digest of ``iso_week`` was followed: one "digest clicked" per
    digest, however many of its links are followed or reloaded (only with analytics consent)."""
    return _record_once(session, employee, "digest_clicked", _derived_event_id(session, employee, "digest", iso_week))


def record_article_read(session: Session, employee_id: int, article_id: int) -> bool:
    """The employee opened an article from their digest: "article read" once per article, with
    the article's topic, and "digest clicked" for the digest that carried it (only with
    analytics consent; nothing for an employee who is gone)."""
    employee = session.get(Employee, employee_id)
    if employee is None or not employee.analytics_consent:
        return False
    article = session.get(Article, article_id)
    topic = min((t.name for t in article.topics), default=None) if article is not None else None
    recorded = _record_once(session, employee, "article_read", _derived_event_id(session, employee, "article", article_id),
                            article_id=article_id, topic=topic)
    week = session.scalar(
        select(DigestSend.iso_week).join(DigestItem, DigestItem.send_id == DigestSend.id)
        .where(DigestItem.employee_id == employee.id, DigestItem.article_id == article_id)
        .order_by(DigestSend.iso_week.desc()).limit(1)
    )
    if week is not None:
        record_digest_click(session, employee, week)
    return recorded


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
    """Delete raw events (and reporting-line trees) of the weeks that ended before the
    organisation's retention cutoff. Whole weeks go, so a week's summary never loses part of
    its events; built report cells and the weekly summaries they come from stay."""
    settings = report_settings(session)
    cutoff = _months_ago(now or utcnow(), settings.activity_retention_months)
    first_kept = iso_week_of(cutoff.astimezone(timezone.utc).date())
    session.execute(delete(ActivityLine).where(ActivityLine.iso_week < first_kept).execution_options(synchronize_session=False))
    result = session.execute(delete(ActivityEvent).where(ActivityEvent.iso_week < first_kept).execution_options(synchronize_session=False))
    return result.rowcount or 0


def erase_employee_activity(session: Session, employee_id: int) -> int:
    """Erasure (GDPR art. 17): delete the employee's raw events and weekly summaries; the
    weeks they touched are rebuilt by the next aggregation (from the remaining summaries)."""
    who = pseudonym(session, employee_id)
    weeks = set(session.scalars(select(ActivityEvent.iso_week).where(ActivityEvent.pseudonym == who).distinct()))
    weeks |= set(session.scalars(select(ReportPersonWeek.iso_week).where(ReportPersonWeek.pseudonym == who).distinct()))
    result = session.execute(delete(ActivityEvent).where(ActivityEvent.pseudonym == who).execution_options(synchronize_session=False))
    session.execute(delete(ReportPersonWeek).where(ReportPersonWeek.pseudonym == who).execution_options(synchronize_session=False))
    mark_dirty(session, weeks)
    return result.rowcount or 0


def _register_erasure_hook() -> None:
    from shared.domain import employees

    if erase_employee_activity not in employees.ERASURE_HOOKS:
        employees.ERASURE_HOOKS.append(erase_employee_activity)


_register_erasure_hook()


# ---- key rotation ----------------------------------------------------------------------------

# (table, pseudonym columns, extra condition): every place a pseudonym is stored
_PSEUDONYM_COLUMNS = (
    ("activity_events", ("pseudonym", "manager"), ""),
    ("activity_lines", ("line", "parent_line"), ""),
    ("report_person_weeks", ("pseudonym", "manager"), ""),
    ("report_cells", ("group_key", "parent_key"), "AND group_kind = 'line'"),
    ("report_headcounts", ("group_key",), "AND group_kind = 'line'"),
)


def rotate_key(session: Session) -> int:
    """Replace the organisation's analytics key with a new version and re-pseudonymise, set
    based, everything recorded about current employees (old pseudonym -> new, worked out
    with both keys); then the old key is gone. Events of people who are no longer employees
    keep pseudonyms nobody can recompute, so they cannot be linked to anyone any more, while
    every person's weeks still join up. Returns the new key version."""
    row = session.scalar(select(AnalyticsKey).with_for_update())
    if row is None:
        analytics_key(session)
        return 1
    old_key, new_key = row.key, secrets.token_bytes(32)
    org_id = _org_id(session)

    def hmac_of(key: bytes, employee_id: int) -> str:
        return hmac.new(key, str(employee_id).encode(), hashlib.sha256).hexdigest()

    mapping = {hmac_of(old_key, e): hmac_of(new_key, e) for e in session.scalars(select(Employee.id))}
    session.execute(text("CREATE TEMPORARY TABLE pseudonym_rotation (old_p VARCHAR(64) PRIMARY KEY, new_p VARCHAR(64) NOT NULL)"))
    try:
        if mapping:
            session.execute(text("INSERT INTO pseudonym_rotation (old_p, new_p) VALUES (:o, :n)"),
                            [{"o": o, "n": n} for o, n in mapping.items()])
        for table, columns, extra in _PSEUDONYM_COLUMNS:
            for column in columns:
                session.execute(text(
                    f"UPDATE {table} SET {column} = (SELECT r.new_p FROM pseudonym_rotation r WHERE r.old_p = {table}.{column}) "
                    f"WHERE org_id = :org {extra} AND {column} IN (SELECT old_p FROM pseudonym_rotation)"
                ), {"org": org_id})
    finally:
        session.execute(text("DROP TABLE pseudonym_rotation"))
    # the release log is bounded (what viewers saw lately): its JSON sets are mapped in place
    for entry in session.scalars(select(ReleaseLog)):
        members = [mapping.get(p, p) for p in entry.members]
        if members != entry.members:
            entry.members = sorted(members)
            entry.set_hash = hashlib.sha256("\n".join(entry.members).encode()).hexdigest()
    session.execute(update(AnalyticsKey).where(AnalyticsKey.id == row.id).values(
        key=new_key, version=row.version + 1, rotated_at=utcnow()))
    session.info.get("analytics_keys", {}).pop(org_id, None)
    session.info.pop("recorded_lines", None)
    session.expire(row)
    return row.version


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
