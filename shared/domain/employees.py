"""Employees: CRUD, manager links, consents, digest preferences, signed links, offboarding,
erasure (GDPR art. 17), data export (art. 15) and formula-safe CSV exports."""
from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from functools import lru_cache

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from shared import security
from shared.db import utcnow
from shared.domain import audit
from shared.domain.employee_import import MAX_LENGTHS
from shared.errors import Conflict, InvalidInput, NotFound
from shared.models import (
    AuditEvent,
    Consent,
    ConsentKind,
    ConsentSource,
    Employee,
    EmployeeStatus,
    Enrolment,
    EnrolmentEvent,
    EnrolmentStatus,
    User,
)
from shared.pagination import list_query

LINK_PURPOSE = "preferences"
LINK_MAX_AGE_SECONDS = 180 * 24 * 3600
PROFILE_FIELDS = ("external_id", "email", "first_name", "last_name", "department", "team", "manager_external_id", "timezone", "locale")
PREFERENCE_FIELDS = ("digest_weekday", "digest_hour", "digest_topics", "paused_until")
EXPORT_COLUMNS = (*PROFILE_FIELDS[:8], "locale", "digest_opt_in", "status")

# Other modules (digest sends, activity events) register ``hook(session, employee_id)`` here
# so erasure reaches their rows too.
ERASURE_HOOKS: list[Callable[[Session, int], None]] = []


def normalise_email(email: str) -> str:
    return email.strip().lower()


def get_employee(session: Session, employee_id: int) -> Employee:
    employee = session.get(Employee, employee_id)
    if employee is None:
        raise NotFound(f"Employee {employee_id} not found")
    return employee


@list_query
def employees_query(q: str | None = None, status: EmployeeStatus | None = None, department: str | None = None,
                    team: str | None = None, manager_id: int | None = None):
    stmt = select(Employee).order_by(Employee.last_name, Employee.first_name, Employee.id)
    if q:
        like = f"%{q.strip().lower()}%"
        stmt = stmt.where(or_(
            Employee.email.like(like),
            func.lower(Employee.first_name).like(like),
            func.lower(Employee.last_name).like(like),
            func.lower(Employee.external_id).like(like),
        ))
    if status is not None:
        stmt = stmt.where(Employee.status == status)
    if department:
        stmt = stmt.where(Employee.department == department)
    if team:
        stmt = stmt.where(Employee.team == team)
    if manager_id is not None:
        stmt = stmt.where(Employee.manager_id == manager_id)
    return stmt


def departments(session: Session) -> list[str]:
    return [d for d in session.scalars(select(Employee.department).distinct().order_by(Employee.department)) if d]


def digest_recipients_query(today: date | None = None):
    """Employees who may get a digest now: active, consenting, not paused. ``left`` and
    withdrawn employees drop out at once because this is evaluated at send time."""
    today = today or utcnow().date()
    return select(Employee).where(
        Employee.status == EmployeeStatus.ACTIVE,
        Employee.digest_consent.is_(True),
        or_(Employee.paused_until.is_(None), Employee.paused_until < today),
    )


def _check_lengths(data: dict) -> None:
    errors = {k: [f"Longer than {MAX_LENGTHS[k]} characters."] for k, v in data.items() if k in MAX_LENGTHS and isinstance(v, str) and len(v) > MAX_LENGTHS[k]}
    if errors:
        raise InvalidInput("Fields too long", errors=errors)


def _find_by(session: Session, column, value) -> Employee | None:  # noqa: ANN001
    return session.scalar(select(Employee).where(column == value))


def _check_unique(session: Session, employee: Employee | None, email: str | None, external_id: str | None) -> None:
    if email is not None:
        other = _find_by(session, Employee.email, email)
        if other is not None and other is not employee:
            raise Conflict("Another employee already has this email", errors={"email": ["Already used by another employee."]})
    if external_id is not None:
        other = _find_by(session, Employee.external_id, external_id)
        if other is not None and other is not employee:
            raise Conflict("Another employee already has this external_id", errors={"external_id": ["Already used by another employee."]})


def _resolve_manager(session: Session, employee: Employee | None, manager_external_id: str | None) -> Employee | None:
    if not manager_external_id:
        return None
    manager = _find_by(session, Employee.external_id, manager_external_id)
    if manager is None:
        raise InvalidInput("Unknown manager", errors={"manager_external_id": ["No employee with this external_id."]})
    if employee is not None:
        # Walk up from the new manager: reaching the employee would close a cycle.
        seen: set[int] = set()
        node: Employee | None = manager
        while node is not None and node.id not in seen:
            if node.id == employee.id:
                raise InvalidInput("Manager cycle", errors={"manager_external_id": ["This manager link would make a reporting cycle."]})
            seen.add(node.id)
            node = session.get(Employee, node.manager_id) if node.manager_id else None
    return manager


def record_consent(session: Session, employee: Employee, kind: ConsentKind, granted: bool, source: ConsentSource,
                   actor: User | None = None) -> Consent | None:
    """Record a grant or withdrawal; a no-op when nothing changes."""
    attr = "digest_consent" if kind == ConsentKind.DIGEST_EMAILS else "analytics_consent"
    if getattr(employee, attr) == granted and session.scalar(
        select(func.count()).select_from(Consent).where(Consent.employee_id == employee.id, Consent.kind == kind)
    ):
        return None
    setattr(employee, attr, granted)
    consent = Consent(employee_id=employee.id, kind=kind, granted=granted, source=source, actor_user_id=actor.id if actor else None)
    session.add(consent)
    audit.record(session, actor, "employee.consent_" + ("granted" if granted else "withdrawn"), "employee", employee.id,
                 {"kind": kind.value, "source": source.value}, org_id=employee.org_id)
    return consent


def create_employee(session: Session, actor: User, data: dict) -> Employee:
    data = dict(data)
    data["email"] = normalise_email(data["email"])
    _check_lengths(data)
    _check_unique(session, None, data["email"], data["external_id"])
    manager = _resolve_manager(session, None, data.get("manager_external_id"))
    digest = data.pop("digest_consent", None)
    analytics = data.pop("analytics_consent", None)
    employee = Employee(org_id=actor.org_id, **{k: v for k, v in data.items() if k in PROFILE_FIELDS + PREFERENCE_FIELDS})
    employee.manager_id = manager.id if manager else None
    if employee.manager_external_id == "":
        employee.manager_external_id = None
    employee.digest_topics = employee.digest_topics or []
    session.add(employee)
    session.flush()
    audit.record(session, actor, "employee.created", "employee", employee.id, {"via": "api"})
    if digest is not None:
        record_consent(session, employee, ConsentKind.DIGEST_EMAILS, digest, ConsentSource.ADMIN, actor)
    if analytics is not None:
        record_consent(session, employee, ConsentKind.ACTIVITY_ANALYTICS, analytics, ConsentSource.ADMIN, actor)
    return employee


def update_employee(session: Session, actor: User | None, employee_id: int, changes: dict,
                    source: ConsentSource = ConsentSource.ADMIN) -> Employee:
    employee = get_employee(session, employee_id)
    changes = dict(changes)
    if "email" in changes:
        changes["email"] = normalise_email(changes["email"])
    if changes.get("manager_external_id") == "":
        changes["manager_external_id"] = None
    _check_lengths(changes)
    _check_unique(session, employee, changes.get("email"), changes.get("external_id"))
    for kind, key in ((ConsentKind.DIGEST_EMAILS, "digest_consent"), (ConsentKind.ACTIVITY_ANALYTICS, "analytics_consent")):
        if key in changes:
            record_consent(session, employee, kind, changes.pop(key), source, actor)
    if "manager_external_id" in changes and changes["manager_external_id"] != employee.manager_external_id:
        manager = _resolve_manager(session, employee, changes["manager_external_id"])
        employee.manager_id = manager.id if manager else None
    changed = sorted(k for k, v in changes.items() if getattr(employee, k) != v)
    if "external_id" in changed:
        session.execute(
            update(Employee).where(Employee.manager_id == employee.id).values(manager_external_id=changes["external_id"])
            .execution_options(synchronize_session="fetch")
        )
    for key in changed:
        setattr(employee, key, changes[key])
    if "status" in changed:
        employee.left_at = utcnow() if employee.status == EmployeeStatus.LEFT else None
    if changed:
        employee.updated_at = utcnow()
        action = "employee.left" if changes.get("status") == EmployeeStatus.LEFT and "status" in changed else "employee.updated"
        audit.record(session, actor, action, "employee", employee.id, {"fields": changed, "via": source.value}, org_id=employee.org_id)
    return employee


def consents_of(session: Session, employee_id: int) -> list[Consent]:
    get_employee(session, employee_id)
    return list(session.scalars(select(Consent).where(Consent.employee_id == employee_id).order_by(Consent.at.desc(), Consent.id.desc())))


def audit_history(session: Session, employee_id: int, limit: int = 200) -> list[AuditEvent]:
    return list(session.scalars(
        select(AuditEvent).where(AuditEvent.target_type == "employee", AuditEvent.target_id == employee_id)
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit)
    ))


# ---- signed links -------------------------------------------------------------------------

@lru_cache(maxsize=8)
def link_signer(secret_key: str) -> security.LinkSigner:
    return security.LinkSigner(secret_key, LINK_PURPOSE)


def preference_token(secret_key: str, employee: Employee) -> str:
    return link_signer(secret_key).sign({"o": employee.org_id, "e": employee.id, "v": employee.link_epoch})


def read_preference_token(secret_key: str, token: str) -> tuple[int, int, int] | None:
    """(org id, employee id, epoch) of a genuine, unexpired link, else None."""
    payload = link_signer(secret_key).verify(token, LINK_MAX_AGE_SECONDS)
    if not isinstance(payload, dict):
        return None
    try:
        return int(payload["o"]), int(payload["e"]), int(payload["v"])
    except (KeyError, TypeError, ValueError):
        return None


def employee_for_link(session: Session, employee_id: int, epoch: int) -> Employee:
    employee = session.get(Employee, employee_id)
    if employee is None or employee.link_epoch != epoch:
        raise NotFound("This link is invalid or has been revoked")
    return employee


def revoke_links(session: Session, actor: User | None, employee_id: int) -> Employee:
    employee = get_employee(session, employee_id)
    employee.link_epoch += 1
    audit.record(session, actor, "employee.links_revoked", "employee", employee.id, org_id=employee.org_id)
    return employee


# ---- data export and erasure -------------------------------------------------------------

def export_data(session: Session, employee_id: int) -> dict:
    """Everything stored about one employee (subject access request)."""
    from shared.models import ProgramSession, SessionAttendance
    e = get_employee(session, employee_id)
    enrolments = session.scalars(select(Enrolment).where(Enrolment.employee_id == e.id).order_by(Enrolment.id))
    return {
        "employee": {
            "id": e.id, **{f: getattr(e, f) for f in PROFILE_FIELDS}, "status": e.status.value,
            "left_at": e.left_at.isoformat() if e.left_at else None,
            "digest_consent": e.digest_consent, "analytics_consent": e.analytics_consent,
            "digest_weekday": e.digest_weekday, "digest_hour": e.digest_hour, "digest_topics": list(e.digest_topics or []),
            "paused_until": e.paused_until.isoformat() if e.paused_until else None,
            "created_at": e.created_at.isoformat(),
        },
        "consents": [
            {"kind": c.kind.value, "granted": c.granted, "source": c.source.value, "at": c.at.isoformat()}
            for c in consents_of(session, e.id)
        ],
        "enrolments": [
            {"program_id": en.program_id, "status": en.status.value, "source": en.source, "created_at": en.created_at.isoformat()}
            for en in enrolments
        ],
        "session_attendances": [
            {"program_id": program_id, "session_id": session_id, "session_title": title, "marked_at": marked_at.isoformat()}
            for program_id, session_id, title, marked_at in session.execute(
                select(ProgramSession.program_id, ProgramSession.id, ProgramSession.title, SessionAttendance.marked_at)
                .join(SessionAttendance, SessionAttendance.session_id == ProgramSession.id)
                .where(SessionAttendance.employee_id == e.id).order_by(SessionAttendance.id))
        ],
    }


def erase_employee(session: Session, actor: User | None, employee_id: int, via: str = "admin") -> None:
    """Remove the employee and every row about them; the audit trail keeps only ids."""
    from shared.domain import programs

    employee = get_employee(session, employee_id)
    org_id = employee.org_id
    # Free their places first, so the waitlist moves up as for any withdrawal.
    held = session.scalars(select(Enrolment.program_id).where(Enrolment.employee_id == employee.id, Enrolment.status == EnrolmentStatus.ENROLLED)).all()
    for program_id in held:
        programs.withdraw(session, actor, program_id, employee.id, source="system")
    for hook in ERASURE_HOOKS:
        hook(session, employee.id)
    session.execute(delete(EnrolmentEvent).where(EnrolmentEvent.employee_id == employee.id).execution_options(synchronize_session=False))
    session.execute(delete(Enrolment).where(Enrolment.employee_id == employee.id).execution_options(synchronize_session=False))
    session.execute(delete(Consent).where(Consent.employee_id == employee.id).execution_options(synchronize_session=False))
    # Reports that pointed at them lose the link (their external id is personal data too).
    session.execute(
        update(Employee).where(Employee.manager_id == employee.id).values(manager_id=None, manager_external_id=None)
        .execution_options(synchronize_session="fetch")
    )
    session.delete(employee)
    session.flush()
    audit.record(session, actor, "employee.erased", "employee", employee_id, {"via": via}, org_id=org_id)


# ---- CSV export ----------------------------------------------------------------------------

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: object) -> str:
    """A cell a spreadsheet shows as text: a leading ' defuses =, +, -, @, tab and CR."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def csv_lines(header: Iterable[str], rows: Iterable[Iterable[object]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    count = 0
    for row in rows:
        writer.writerow([csv_safe(v) for v in row])
        count += 1
        if count % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def export_rows(session: Session, stmt=None) -> Iterator[tuple]:  # noqa: ANN001
    stmt = stmt if stmt is not None else employees_query()
    for e in session.scalars(stmt.execution_options(yield_per=1000)):
        yield (e.external_id, e.email, e.first_name, e.last_name, e.department, e.team, e.manager_external_id or "",
               e.timezone, e.locale, "true" if e.digest_consent else "false", e.status.value)
