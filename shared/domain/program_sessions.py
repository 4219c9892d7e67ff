"""Program sessions (a class, a workshop, a call of a wellbeing program), attendance
marked by HR admins, and the upcoming sessions that go into employees' digests.

Attendance is a row per (session, employee), so marking twice is a no-op; for an
employee who consented to analytics it is also recorded as a ``session_attended``
activity event with a deterministic event id, which is retracted if the mark is undone.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from shared.db import utcnow
from shared.domain import activity, audit, employees
from shared.domain.programs import get_program
from shared.errors import Conflict, InvalidInput, NotFound
from shared.models import (
    ActivityEvent,
    Employee,
    Enrolment,
    EnrolmentStatus,
    ProgramSession,
    SessionAttendance,
    User,
)
from shared.pagination import list_query

SESSION_FIELDS = ("title", "starts_at", "duration_minutes", "location", "join_url", "capacity")
MAX_DURATION_MINUTES = 24 * 60
# How far ahead a digest looks for an employee's program sessions.
DIGEST_HORIZON = timedelta(days=14)


def _normalised(field: str, value):  # noqa: ANN001, ANN202
    """A checked session field as stored: titles trimmed, start times in UTC."""
    if field == "title":
        return value.strip()
    if field == "starts_at":
        return value.astimezone(timezone.utc)
    return value


def _is_web_address(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced "[" in the host
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _check_session(data: dict) -> None:
    errors: dict[str, list[str]] = {}
    if not (data.get("title") or "").strip():
        errors["title"] = ["Must not be empty."]
    starts_at = data.get("starts_at")
    if not isinstance(starts_at, datetime) or starts_at.tzinfo is None:
        errors["starts_at"] = ["Give a date and time with a timezone, e.g. 2026-12-01T18:00:00+01:00."]
    duration = data.get("duration_minutes")
    if not isinstance(duration, int) or not 1 <= duration <= MAX_DURATION_MINUTES:
        errors["duration_minutes"] = [f"Must be from 1 to {MAX_DURATION_MINUTES} minutes."]
    url = data.get("join_url") or ""
    if url and not _is_web_address(url):
        errors["join_url"] = ["Must be an http:// or https:// address."]
    if data.get("capacity") is not None and data["capacity"] < 1:
        errors["capacity"] = ["Must be at least 1 (or empty for no limit)."]
    if errors:
        raise InvalidInput("Invalid program session", errors=errors)


def sessions_query(program_id: int, upcoming_from: datetime | None = None):
    stmt = select(ProgramSession).where(ProgramSession.program_id == program_id)
    if upcoming_from is not None:
        stmt = stmt.where(ProgramSession.starts_at >= upcoming_from)
    return stmt.order_by(ProgramSession.starts_at, ProgramSession.id)


def get_session(session: Session, program_id: int, session_id: int) -> ProgramSession:
    get_program(session, program_id)
    found = session.get(ProgramSession, session_id)
    if found is None or found.program_id != program_id:
        raise NotFound(f"Session {session_id} of program {program_id} not found")
    return found


def create_session(session: Session, actor: User, program_id: int, data: dict) -> ProgramSession:
    program = get_program(session, program_id)
    values = {"location": "", "join_url": "", "capacity": None} | {k: v for k, v in data.items() if k in SESSION_FIELDS}
    _check_session(values)
    row = ProgramSession(program_id=program.id, **{k: _normalised(k, v) for k, v in values.items()})
    session.add(row)
    session.flush()
    audit.record(session, actor, "program_session.created", "program_session", row.id, {"program_id": program.id})
    return row


def update_session(session: Session, actor: User, program_id: int, session_id: int, changes: dict) -> ProgramSession:
    row = get_session(session, program_id, session_id)
    merged = {f: getattr(row, f) for f in SESSION_FIELDS} | changes
    _check_session(merged)
    changed = sorted(k for k, v in changes.items() if getattr(row, k) != v)
    for key in changed:
        setattr(row, key, _normalised(key, changes[key]))
    if changed:
        audit.record(session, actor, "program_session.updated", "program_session", row.id, {"program_id": program_id, "fields": changed})
    return row


def delete_session(session: Session, actor: User, program_id: int, session_id: int) -> None:
    row = get_session(session, program_id, session_id)
    for employee_id in session.scalars(select(SessionAttendance.employee_id).where(SessionAttendance.session_id == row.id)).all():
        _retract_activity(session, row.id, employee_id)
    session.execute(delete(SessionAttendance).where(SessionAttendance.session_id == row.id).execution_options(synchronize_session=False))
    session.delete(row)
    session.flush()
    audit.record(session, actor, "program_session.deleted", "program_session", session_id, {"program_id": program_id})


def attendance_counts(session: Session, session_ids: list[int]) -> dict[int, int]:
    counts = {sid: 0 for sid in session_ids}
    if session_ids:
        for sid, n in session.execute(select(SessionAttendance.session_id, func.count()).where(
                SessionAttendance.session_id.in_(session_ids)).group_by(SessionAttendance.session_id)):
            counts[sid] = n
    return counts


# ---- attendance ----------------------------------------------------------------------------

def _activity_event_id(session_id: int, employee_id: int) -> str:
    return f"session-{session_id}-attended-{employee_id}"


@list_query
def attendances_query(session_id: int):
    return select(SessionAttendance).where(SessionAttendance.session_id == session_id).order_by(SessionAttendance.id)


def mark_attended(session: Session, actor: User, program_id: int, session_id: int, employee_id: int,
                  now: datetime | None = None) -> tuple[SessionAttendance, bool]:
    """Record that an enrolled employee attended a session that has started. Returns
    (attendance, whether it was new); marking twice changes nothing."""
    row = get_session(session, program_id, session_id)
    now = now or utcnow()
    if row.starts_at > now:
        raise Conflict("The session has not started yet; attendance is marked once it has.",
                       errors={"session": ["Not started yet."]})
    employee = session.get(Employee, employee_id)
    enrolled = session.scalar(select(Enrolment.id).where(Enrolment.program_id == program_id, Enrolment.employee_id == employee_id,
                                                         Enrolment.status == EnrolmentStatus.ENROLLED))
    if employee is None or enrolled is None:
        raise InvalidInput("Only employees enrolled in the program can attend its sessions.",
                           errors={"employee_id": [f"Employee {employee_id} is not enrolled in this program."]})
    existing = session.scalar(select(SessionAttendance).where(SessionAttendance.session_id == row.id,
                                                              SessionAttendance.employee_id == employee_id))
    if existing is not None:
        return existing, False
    if row.capacity is not None and attendance_counts(session, [row.id])[row.id] >= row.capacity:
        raise Conflict(f"The session is full ({row.capacity} places).", errors={"session": ["No places left."]})
    attendance = SessionAttendance(session_id=row.id, employee_id=employee_id, marked_by_user_id=actor.id if actor else None)
    session.add(attendance)
    session.flush()
    # A no-op for employees without analytics consent (the attendance row is the record HR sees).
    activity.record_event(session, employee, "session_attended", occurred_at=row.starts_at,
                          event_id=_activity_event_id(row.id, employee_id), program_id=program_id)
    audit.record(session, actor, "program_session.attended", "employee", employee_id, {"program_id": program_id, "session_id": row.id})
    return attendance, True


def unmark_attended(session: Session, actor: User, program_id: int, session_id: int, employee_id: int) -> None:
    """Undo a mistaken attendance mark, and the activity event it recorded."""
    row = get_session(session, program_id, session_id)
    attendance = session.scalar(select(SessionAttendance).where(SessionAttendance.session_id == row.id,
                                                                SessionAttendance.employee_id == employee_id))
    if attendance is None:
        raise NotFound(f"Employee {employee_id} is not marked as attending session {session_id}")
    session.delete(attendance)
    _retract_activity(session, row.id, employee_id)
    session.flush()
    audit.record(session, actor, "program_session.attendance_removed", "employee", employee_id,
                 {"program_id": program_id, "session_id": row.id})


def _retract_activity(session: Session, session_id: int, employee_id: int) -> None:
    event = session.scalar(select(ActivityEvent).where(ActivityEvent.event_id == _activity_event_id(session_id, employee_id)))
    if event is None:
        return
    week = event.iso_week
    session.delete(event)
    session.flush()
    activity.mark_dirty(session, [week])


# ---- digests --------------------------------------------------------------------------------

def upcoming_by_program(session: Session, now: datetime) -> dict[int, list[ProgramSession]]:
    """The organisation's sessions starting within DIGEST_HORIZON of ``now``, by program:
    loaded once per digest batch, then picked per employee by their programs."""
    found: dict[int, list[ProgramSession]] = {}
    stmt = select(ProgramSession).where(ProgramSession.starts_at >= now, ProgramSession.starts_at < now + DIGEST_HORIZON)
    for row in session.scalars(stmt.order_by(ProgramSession.starts_at, ProgramSession.id)):
        found.setdefault(row.program_id, []).append(row)
    return found


def _erase(session: Session, employee_id: int) -> None:
    session.execute(delete(SessionAttendance).where(SessionAttendance.employee_id == employee_id).execution_options(synchronize_session=False))


if _erase not in employees.ERASURE_HOOKS:
    employees.ERASURE_HOOKS.append(_erase)
