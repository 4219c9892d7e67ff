"""Wellbeing programs, enrolment, withdrawal and the waitlist.

Every change to a program's enrolments first locks the program row (``SELECT ... FOR
UPDATE`` on PostgreSQL; on SQLite a write to the row takes the database's single write
lock), so concurrent enrolments and withdrawals are serialised per program: capacity is
never exceeded and the waitlist is promoted strictly in the order people joined it.
"""
from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from shared.db import utcnow
from shared.domain import audit
from shared.errors import Conflict, InvalidInput, NotFound
from shared.models import Employee, EmployeeStatus, Enrolment, EnrolmentEvent, EnrolmentStatus, Program, ProgramStatus, User
from shared.pagination import list_query

PROGRAM_FIELDS = ("name", "description", "topics", "starts_on", "ends_on", "capacity", "status")


def get_program(session: Session, program_id: int) -> Program:
    program = session.get(Program, program_id)
    if program is None:
        raise NotFound(f"Program {program_id} not found")
    return program


@list_query
def programs_query(status: ProgramStatus | None = None, q: str | None = None):
    stmt = select(Program).order_by(Program.starts_on.is_(None), Program.starts_on, Program.id)
    if status is not None:
        stmt = stmt.where(Program.status == status)
    if q:
        stmt = stmt.where(func.lower(Program.name).like(f"%{q.strip().lower()}%"))
    return stmt


def _check_program(data: dict) -> None:
    errors = {}
    if data.get("starts_on") and data.get("ends_on") and data["ends_on"] < data["starts_on"]:
        errors["ends_on"] = ["Must not be before starts_on."]
    if data.get("capacity") is not None and data["capacity"] < 1:
        errors["capacity"] = ["Must be at least 1 (or empty for no limit)."]
    if "name" in data and not (data["name"] or "").strip():
        errors["name"] = ["Must not be empty."]
    if errors:
        raise InvalidInput("Invalid program", errors=errors)


def create_program(session: Session, actor: User, data: dict) -> Program:
    _check_program(data)
    program = Program(org_id=actor.org_id, **{k: v for k, v in data.items() if k in PROGRAM_FIELDS})
    program.name = program.name.strip()
    program.topics = program.topics or []
    session.add(program)
    session.flush()
    audit.record(session, actor, "program.created", "program", program.id)
    return program


def update_program(session: Session, actor: User, program_id: int, changes: dict) -> Program:
    program = lock_program(session, program_id)
    merged = {f: getattr(program, f) for f in PROGRAM_FIELDS} | changes
    _check_program(merged)
    changed = sorted(k for k, v in changes.items() if getattr(program, k) != v)
    for key in changed:
        setattr(program, key, changes[key])
    if changed:
        audit.record(session, actor, "program.updated", "program", program.id, {"fields": changed})
        if "capacity" in changed:
            _promote(session, actor, program)
    return program


def delete_program(session: Session, actor: User, program_id: int) -> None:
    program = get_program(session, program_id)
    session.delete(program)
    session.flush()
    audit.record(session, actor, "program.deleted", "program", program_id)


def lock_program(session: Session, program_id: int) -> Program:
    """The program row, locked until the transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        stmt = select(Program).where(Program.id == program_id).with_for_update()
    else:
        # SQLite: writing takes the database write lock (waits on busy_timeout), which
        # serialises this transaction against every other writer.
        session.execute(update(Program).where(Program.id == program_id).values(lock_version=Program.lock_version + 1)
                        .execution_options(synchronize_session=False))
        stmt = select(Program).where(Program.id == program_id)
    program = session.scalar(stmt.execution_options(populate_existing=True))
    if program is None:
        raise NotFound(f"Program {program_id} not found")
    return program


def _event(session: Session, enrolment: Enrolment, action: str, source: str, actor: User | None) -> None:
    session.add(EnrolmentEvent(program_id=enrolment.program_id, employee_id=enrolment.employee_id, action=action, source=source,
                               actor_user_id=actor.id if actor else None))


def _enrolled_count(session: Session, program_id: int) -> int:
    return session.scalar(select(func.count()).select_from(Enrolment).where(Enrolment.program_id == program_id, Enrolment.status == EnrolmentStatus.ENROLLED))


def enrol(session: Session, actor: User | None, program_id: int, employee_id: int, source: str = "admin") -> Enrolment:
    """Enrol (or waitlist, when full) one employee; enrolling twice is a no-op."""
    program = lock_program(session, program_id)
    allowed = (ProgramStatus.OPEN,) if source == "employee_link" else (ProgramStatus.DRAFT, ProgramStatus.OPEN)
    if program.status not in allowed:
        raise Conflict(f"Program is {program.status.value}; enrolment is closed", errors={"program": ["Not open for enrolment."]})
    employee = session.get(Employee, employee_id)
    if employee is None:
        raise InvalidInput("Unknown employee", errors={"employee_id": [f"No employee {employee_id}."]})
    if employee.status != EmployeeStatus.ACTIVE:
        raise InvalidInput("Employee has left", errors={"employee_id": ["Only active employees can enrol."]})
    enrolment = session.scalar(select(Enrolment).where(Enrolment.program_id == program.id, Enrolment.employee_id == employee_id))
    if enrolment is not None and enrolment.status != EnrolmentStatus.WITHDRAWN:
        return enrolment
    full = program.capacity is not None and _enrolled_count(session, program.id) >= program.capacity
    status = EnrolmentStatus.WAITLISTED if full else EnrolmentStatus.ENROLLED
    seq = None
    if full:
        seq = (session.scalar(select(func.max(Enrolment.waitlist_seq)).where(Enrolment.program_id == program.id)) or 0) + 1
    if enrolment is None:
        enrolment = Enrolment(program_id=program.id, employee_id=employee_id, status=status, waitlist_seq=seq, source=source)
        session.add(enrolment)
    else:
        enrolment.status, enrolment.waitlist_seq, enrolment.source, enrolment.updated_at = status, seq, source, utcnow()
    session.flush()
    _event(session, enrolment, "waitlisted" if full else "enrolled", source, actor)
    audit.record(session, actor, "enrolment." + ("waitlisted" if full else "enrolled"), "employee", employee_id,
                 {"program_id": program.id, "source": source}, org_id=program.org_id)
    return enrolment


def withdraw(session: Session, actor: User | None, program_id: int, employee_id: int, source: str = "admin") -> Enrolment:
    """Withdraw one employee; a freed place goes to the head of the waitlist."""
    program = lock_program(session, program_id)
    enrolment = session.scalar(
        select(Enrolment).where(Enrolment.program_id == program.id, Enrolment.employee_id == employee_id)
        .execution_options(populate_existing=True)
    )
    if enrolment is None:
        raise NotFound(f"Employee {employee_id} is not enrolled in program {program_id}")
    if enrolment.status == EnrolmentStatus.WITHDRAWN:
        return enrolment
    was_enrolled = enrolment.status == EnrolmentStatus.ENROLLED
    enrolment.status, enrolment.waitlist_seq, enrolment.updated_at = EnrolmentStatus.WITHDRAWN, None, utcnow()
    _event(session, enrolment, "withdrawn", source, actor)
    audit.record(session, actor, "enrolment.withdrawn", "employee", employee_id, {"program_id": program.id, "source": source}, org_id=program.org_id)
    session.flush()
    if was_enrolled:
        _promote(session, actor, program)
    return enrolment


def _promote(session: Session, actor: User | None, program: Program) -> list[Enrolment]:
    promoted = []
    free = None if program.capacity is None else program.capacity - _enrolled_count(session, program.id)
    waiting = select(Enrolment).where(Enrolment.program_id == program.id, Enrolment.status == EnrolmentStatus.WAITLISTED).order_by(
        Enrolment.waitlist_seq, Enrolment.id
    )
    if free is not None:
        if free <= 0:
            return promoted
        waiting = waiting.limit(free)
    for enrolment in session.scalars(waiting.execution_options(populate_existing=True)).all():
        enrolment.status, enrolment.waitlist_seq, enrolment.updated_at = EnrolmentStatus.ENROLLED, None, utcnow()
        _event(session, enrolment, "promoted", "system", actor)
        audit.record(session, actor, "enrolment.promoted", "employee", enrolment.employee_id, {"program_id": program.id}, org_id=program.org_id)
        promoted.append(enrolment)
    session.flush()
    return promoted


def get_enrolment(session: Session, program_id: int, enrolment_id: int) -> Enrolment:
    get_program(session, program_id)
    enrolment = session.get(Enrolment, enrolment_id)
    if enrolment is None or enrolment.program_id != program_id:
        raise NotFound(f"Enrolment {enrolment_id} not found")
    return enrolment


@list_query
def enrolments_query(program_id: int, status: EnrolmentStatus | None = None):
    stmt = select(Enrolment).where(Enrolment.program_id == program_id)
    if status is not None:
        stmt = stmt.where(Enrolment.status == status)
    return stmt.order_by(Enrolment.status, Enrolment.waitlist_seq, Enrolment.id)


def waitlist_positions(session: Session, program_id: int) -> dict[int, int]:
    """enrolment id -> 1-based place in the waitlist."""
    ids = session.scalars(
        select(Enrolment.id).where(Enrolment.program_id == program_id, Enrolment.status == EnrolmentStatus.WAITLISTED)
        .order_by(Enrolment.waitlist_seq, Enrolment.id)
    ).all()
    return {eid: n for n, eid in enumerate(ids, 1)}


@list_query
def events_query(program_id: int):
    return select(EnrolmentEvent).where(EnrolmentEvent.program_id == program_id).order_by(EnrolmentEvent.at.desc(), EnrolmentEvent.id.desc())


def counts(session: Session, program_id: int) -> dict[str, int]:
    rows = session.execute(select(Enrolment.status, func.count()).where(Enrolment.program_id == program_id).group_by(Enrolment.status))
    result = {s.value: 0 for s in EnrolmentStatus}
    for status, n in rows:
        result[status.value] = n
    return result


def export_rows(session: Session, program_id: int):
    get_program(session, program_id)
    positions = waitlist_positions(session, program_id)
    stmt = select(Enrolment, Employee).join(Employee, Employee.id == Enrolment.employee_id).where(Enrolment.program_id == program_id).order_by(
        Enrolment.status, Enrolment.waitlist_seq, Enrolment.id
    )
    for enrolment, employee in session.execute(stmt):
        yield (employee.external_id, employee.email, employee.first_name, employee.last_name, employee.department, employee.team,
               enrolment.status.value, positions.get(enrolment.id, ""), enrolment.source, enrolment.created_at.isoformat())


EXPORT_HEADER = ("external_id", "email", "first_name", "last_name", "department", "team", "status", "waitlist_position", "source", "enrolled_at")
