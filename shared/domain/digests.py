"""Weekly digests: settings, the due-check that creates one send per (employee, ISO
week), claiming and sending batches over SMTP, recovery of lost work, admin controls.

Exactly-once is the database's job: a ``DigestSend`` row is unique per employee and
week and is created before any mail leaves (INSERT ... ON CONFLICT DO NOTHING, so
concurrent or repeated due-checks create it once); a worker claims rows atomically
(UPDATE ... WHERE state = 'queued'), re-checks the employee right before handing each
message to SMTP, and marks the row sent only after the server accepted it. Tasks carry
ids only and may run any number of times. Rows a crashed worker left claimed, and
queued rows whose task was lost, are found again by :func:`recover`.
"""
from __future__ import annotations

import logging
import random
import smtplib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import and_, delete, func, insert, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared import mail
from shared.config import Settings
from shared.db import Database, UTCDateTime, utcnow
from shared.domain import accounts, audit, employees
from shared.domain import articles as article_domain
from shared.domain import digest_render, program_sessions
from shared.domain.digest_schedule import SendWindow, iso_week_of, parse_iso_week, weeks_due
from shared.errors import Conflict, InvalidInput, NotFound
from shared.models import (
    DigestItem,
    DigestRun,
    DigestSend,
    DigestSettings,
    Employee,
    EmployeeStatus,
    Enrolment,
    EnrolmentStatus,
    Organisation,
    Program,
    ProgramSession,
    ProgramStatus,
    PulseResponse,
    RunTrigger,
    SendState,
    SuppressedAddress,
    User,
)

log = logging.getLogger(__name__)

BATCH_SIZE = 100
# Attempts (SMTP tries that ended in a temporary error, or claims lost with a crashed
# worker) before a send is marked failed.
MAX_ATTEMPTS = 8
# 5xx answers for one address before it is suppressed.
HARD_FAILURE_LIMIT = 3
# Backoff of temporary SMTP errors; the variables exist for fault tests and odd relays.
# A claim not refreshed for this long belongs to a dead worker. A batch refreshes its
# claims every HEARTBEAT_SECONDS, so only a dead (or wedged) worker's claims go stale.
CLAIM_TIMEOUT = timedelta(minutes=2)
HEARTBEAT_SECONDS = 5.0
# A queued row whose task should have run this long ago is enqueued again.
REQUEUE_AFTER = timedelta(minutes=5)


# ---- settings ----------------------------------------------------------------------------

def get_settings(session: Session) -> DigestSettings:
    """The organisation's digest settings (created with defaults on first use)."""
    row = session.scalar(select(DigestSettings))
    if row is None:
        row = DigestSettings(send_weekdays=list(range(7)), window_start_hour=0, window_end_hour=24, quiet_days=[],
                             paused=False, rate_per_second=50)
        session.add(row)
        try:
            with session.begin_nested():
                session.flush()
        except IntegrityError:
            row = session.scalar(select(DigestSettings))
    return row


def window_of(row: DigestSettings) -> SendWindow:
    return SendWindow(
        weekdays=frozenset(row.send_weekdays or range(7)),
        start_hour=row.window_start_hour,
        end_hour=row.window_end_hour,
        quiet_days=frozenset(date.fromisoformat(d) for d in row.quiet_days or []),
    )


def update_settings(session: Session, actor: User, changes: dict) -> DigestSettings:
    row = get_settings(session)
    merged = {
        "send_weekdays": sorted(set(changes.get("send_weekdays", row.send_weekdays))),
        "window_start_hour": changes.get("window_start_hour", row.window_start_hour),
        "window_end_hour": changes.get("window_end_hour", row.window_end_hour),
        "quiet_days": sorted({d.isoformat() if isinstance(d, date) else str(d) for d in changes.get("quiet_days", row.quiet_days)}),
        "rate_per_second": changes.get("rate_per_second", row.rate_per_second),
    }
    try:
        SendWindow(frozenset(merged["send_weekdays"]), merged["window_start_hour"], merged["window_end_hour"],
                   frozenset(date.fromisoformat(d) for d in merged["quiet_days"]))
    except ValueError as error:
        raise InvalidInput("The send window is not valid.", errors={"send_window": [str(error)]}) from None
    if merged["rate_per_second"] < 1:
        raise InvalidInput("The send rate must be at least 1 per second.", errors={"rate_per_second": ["Must be at least 1."]})
    changed = sorted(k for k, v in merged.items() if getattr(row, k) != v)
    for key in changed:
        setattr(row, key, merged[key])
    if changed:
        row.updated_at = utcnow()
        audit.record(session, actor, "digest.settings_updated", "organisation", actor.org_id, {"fields": changed})
    return row


def set_paused(session: Session, actor: User | None, paused: bool) -> tuple[DigestSettings, list[list[int]]]:
    """Pause or resume every digest of the organisation. Sends not yet handed to SMTP
    stay queued while paused; resuming returns their batches for enqueueing (nobody
    who already got this week's digest is sent it again: their row says sent)."""
    row = get_settings(session)
    batches: list[list[int]] = []
    if row.paused != paused:
        row.paused = paused
        row.updated_at = utcnow()
        audit.record(session, actor, "digest.paused" if paused else "digest.resumed", "organisation", row.org_id, org_id=row.org_id)
    if not paused:
        ids = list(session.scalars(select(DigestSend.id).where(DigestSend.state == SendState.QUEUED).order_by(DigestSend.id)))
        batches = _mark_enqueued(session, ids, utcnow())
    return row, batches


# ---- the due-check: creating sends -------------------------------------------------------

def _dialect_insert(session: Session):
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def _eligible(today: date):
    return employees.digest_recipients_query(today).whereclause


def _insert_sends(session: Session, org_id: int, iso_week: str, run_id: int, now: datetime, where) -> int:  # noqa: ANN001
    table = DigestSend.__table__
    already = select(DigestSend.id).where(DigestSend.employee_id == Employee.id, DigestSend.iso_week == iso_week)
    source = (
        select(
            literal(org_id), Employee.id, literal(iso_week), literal(run_id), literal(SendState.QUEUED.value),
            literal(0), literal(now, UTCDateTime()), literal(now, UTCDateTime()),
        )
        # INSERT ... SELECT is not an ORM query, so the tenant guard cannot scope it: the
        # organisation is named here explicitly.
        .where(Employee.org_id == org_id, where, ~already.exists())
    )
    columns = ["org_id", "employee_id", "iso_week", "run_id", "state", "attempts", "created_at", "updated_at"]
    statement = _dialect_insert(session)(table).from_select(columns, source).on_conflict_do_nothing(
        index_elements=["employee_id", "iso_week"]).returning(table.c.id)
    # Counted from RETURNING: rowcount of INSERT ... SELECT is not reliable on every driver.
    return len(session.execute(statement).all())


def _scheduled_run(session: Session, org_id: int, iso_week: str) -> DigestRun:
    key = f"{org_id}:{iso_week}"
    run = session.scalar(select(DigestRun).where(DigestRun.schedule_key == key))
    if run is None:
        run = DigestRun(iso_week=iso_week, trigger=RunTrigger.SCHEDULE, schedule_key=key)
        try:
            with session.begin_nested():
                session.add(run)
                session.flush()
        except IntegrityError:
            run = session.scalar(select(DigestRun).where(DigestRun.schedule_key == key))
    return run


def _mark_enqueued(session: Session, ids: list[int], at: datetime) -> list[list[int]]:
    batches = [ids[i:i + BATCH_SIZE] for i in range(0, len(ids), BATCH_SIZE)]
    for batch in batches:
        session.execute(update(DigestSend).where(DigestSend.id.in_(batch)).values(enqueued_at=at)
                        .execution_options(synchronize_session=False))
    return batches


def _unenqueued_batches(session: Session, run_id: int, now: datetime) -> list[list[int]]:
    ids = list(session.scalars(select(DigestSend.id).where(
        DigestSend.run_id == run_id, DigestSend.state == SendState.QUEUED, DigestSend.enqueued_at.is_(None)).order_by(DigestSend.id)))
    return _mark_enqueued(session, ids, now)


@dataclass
class DueCheckResult:
    runs: dict[int, int] = field(default_factory=dict)  # run id -> sends created
    batches: list[list[int]] = field(default_factory=list)

    @property
    def created(self) -> int:
        return sum(self.runs.values())


def due_check(session: Session, now: datetime | None = None) -> DueCheckResult:
    """Create the sends that are due at ``now`` for the session's organisation: active,
    consenting, not paused employees with no send for the week due in their timezone.
    Due times are computed once per distinct (timezone, weekday, hour), never per
    employee. Returns the batches of send ids to enqueue once this commits."""
    now = now or utcnow()
    org_id = session.info["org_id"]
    result = DueCheckResult()
    config = get_settings(session)
    if config.paused:
        return result
    today = now.date()
    eligible = _eligible(today)
    combos = [tuple(r) for r in session.execute(
        select(Employee.timezone, Employee.digest_weekday, Employee.digest_hour).where(eligible).distinct())]
    for iso_week, week_combos in sorted(weeks_due(now, combos, window_of(config)).items()):
        run = None
        for start in range(0, len(week_combos), 200):
            chunk = week_combos[start:start + 200]
            match = or_(*(and_(Employee.timezone == tz, Employee.digest_weekday == wd, Employee.digest_hour == hr) for tz, wd, hr in chunk))
            pending = session.scalar(select(func.count()).select_from(Employee).where(
                eligible, match, ~select(DigestSend.id).where(DigestSend.employee_id == Employee.id, DigestSend.iso_week == iso_week).exists()))
            if not pending:
                continue
            run = run or _scheduled_run(session, org_id, iso_week)
            created = _insert_sends(session, org_id, iso_week, run.id, now, and_(eligible, match))
            result.runs[run.id] = result.runs.get(run.id, 0) + created
        if run is not None:
            run.created_count += result.runs.get(run.id, 0)
            run.updated_at = now
            result.batches += _unenqueued_batches(session, run.id, now)
    return result


def start_run(session: Session, actor: User | None, iso_week: str | None = None, now: datetime | None = None) -> tuple[DigestRun, list[list[int]]]:
    """A run by hand (API, console, CLI): every eligible employee without a send for
    ``iso_week`` (default: the current ISO week) gets one now, whatever their local
    send time. Employees who already have one are left alone."""
    now = now or utcnow()
    if iso_week is None:
        iso_week = iso_week_of(now.date())
    try:
        parse_iso_week(iso_week)
    except ValueError as error:
        raise InvalidInput("The week is not valid.", errors={"week": [str(error)]}) from None
    if get_settings(session).paused:
        raise Conflict("Digests are paused for this organisation; resume them first.")
    org_id = session.info["org_id"]
    run = DigestRun(iso_week=iso_week, trigger=RunTrigger.MANUAL, started_by_user_id=actor.id if actor else None)
    session.add(run)
    session.flush()
    run.created_count = _insert_sends(session, org_id, iso_week, run.id, now, _eligible(now.date()))
    audit.record(session, actor, "digest.run_started", "digest_run", run.id, {"week": iso_week, "created": run.created_count}, org_id=org_id)
    return run, _unenqueued_batches(session, run.id, now)


# ---- runs, sends and their counts ---------------------------------------------------------

def get_run(session: Session, run_id: int) -> DigestRun:
    run = session.get(DigestRun, run_id)
    if run is None:
        raise NotFound(f"Digest run {run_id} not found")
    return run


def runs_query(iso_week: str | None = None):
    stmt = select(DigestRun).order_by(DigestRun.id.desc())
    if iso_week:
        stmt = stmt.where(DigestRun.iso_week == iso_week)
    return stmt


def run_counts(session: Session, run_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    ids = list(run_ids)
    counts = {rid: {s.value: 0 for s in SendState} for rid in ids}
    if ids:
        for run_id, state, n in session.execute(select(DigestSend.run_id, DigestSend.state, func.count())
                                                .where(DigestSend.run_id.in_(ids)).group_by(DigestSend.run_id, DigestSend.state)):
            counts[run_id][SendState(state).value] = n
    for c in counts.values():
        c["total"] = sum(c[s.value] for s in SendState)
    return counts


def describe_run(run: DigestRun, counts: dict[str, int]) -> dict:
    pending = counts["queued"] + counts["sending"]
    return {
        "id": run.id, "iso_week": run.iso_week, "trigger": run.trigger.value, "started_by_user_id": run.started_by_user_id,
        "created_at": run.created_at, "created_count": run.created_count, "counts": counts,
        "status": "running" if pending else "done",
    }


def describe_runs(session: Session, runs: list[DigestRun]) -> list[dict]:
    """Runs with their progress (send counts by state), counted in one query."""
    counts = run_counts(session, [r.id for r in runs])
    return [describe_run(r, counts[r.id]) for r in runs]


def get_send(session: Session, send_id: int) -> DigestSend:
    send = session.get(DigestSend, send_id)
    if send is None:
        raise NotFound(f"Digest send {send_id} not found")
    return send


def sends_query(run_id: int | None = None, state: SendState | None = None, employee_id: int | None = None, iso_week: str | None = None):
    stmt = select(DigestSend).order_by(DigestSend.id)
    if run_id is not None:
        stmt = stmt.where(DigestSend.run_id == run_id)
    if state is not None:
        stmt = stmt.where(DigestSend.state == state)
    if employee_id is not None:
        stmt = stmt.where(DigestSend.employee_id == employee_id)
    if iso_week:
        stmt = stmt.where(DigestSend.iso_week == iso_week)
    return stmt


def retry_send(session: Session, actor: User, send_id: int) -> tuple[DigestSend, list[list[int]]]:
    """Send a failed (or skipped) digest again: back to queued with fresh attempts.
    A sent digest is never sent twice."""
    send = get_send(session, send_id)
    if send.state not in (SendState.FAILED, SendState.SKIPPED):
        raise Conflict(f"Only failed or skipped sends can be retried; this one is {send.state.value}.")
    send.state, send.attempts, send.skip_reason, send.next_attempt_at = SendState.QUEUED, 0, None, None
    send.claimed_by = send.claimed_at = None
    send.updated_at = utcnow()
    audit.record(session, actor, "digest.send_retried", "digest_send", send.id)
    return send, _mark_enqueued(session, [send.id], utcnow())


def suppressions_query():
    return select(SuppressedAddress).where(SuppressedAddress.suppressed_at.is_not(None)).order_by(SuppressedAddress.id)


def clear_suppression(session: Session, actor: User, suppression_id: int) -> None:
    row = session.get(SuppressedAddress, suppression_id)
    if row is None:
        raise NotFound(f"Suppression {suppression_id} not found")
    session.delete(row)
    audit.record(session, actor, "digest.suppression_cleared", "digest_suppression", suppression_id)


# ---- personalisation and preview ---------------------------------------------------------

@dataclass
class BatchContext:
    """What a batch needs about the organisation, loaded once per batch."""

    organisation: Organisation
    candidates: list
    today: date
    # program id -> its sessions starting in the next two weeks
    upcoming_sessions: dict[int, list[ProgramSession]] = field(default_factory=dict)


def batch_context(session: Session, today: date, now: datetime | None = None) -> BatchContext:
    organisation = accounts.get_organisation(session, session.info["org_id"])
    return BatchContext(organisation, article_domain.articles_for_employees(session, today=today), today,
                        program_sessions.upcoming_by_program(session, now or utcnow()))


def received_articles(session: Session, employee_ids: list[int]) -> dict[int, set[int]]:
    got: dict[int, set[int]] = {e: set() for e in employee_ids}
    if employee_ids:
        for employee_id, article_id in session.execute(select(DigestItem.employee_id, DigestItem.article_id)
                                                       .where(DigestItem.employee_id.in_(employee_ids))):
            got[employee_id].add(article_id)
    return got


def current_programs(session: Session, employee_ids: list[int], today: date) -> dict[int, list[Program]]:
    got: dict[int, list[Program]] = {e: [] for e in employee_ids}
    if employee_ids:
        rows = session.execute(
            select(Enrolment.employee_id, Program).join(Program, Program.id == Enrolment.program_id)
            .where(Enrolment.employee_id.in_(employee_ids), Enrolment.status == EnrolmentStatus.ENROLLED,
                   Program.status.in_([ProgramStatus.OPEN, ProgramStatus.CLOSED]),
                   or_(Program.ends_on.is_(None), Program.ends_on >= today))
            .order_by(Program.starts_on, Program.id))
        for employee_id, program in rows:
            got[employee_id].append(program)
    return got


def personalise(settings: Settings, ctx: BatchContext, employee: Employee, iso_week: str, received: set[int],
                programs: list[Program], preview: bool = False) -> digest_render.RenderedDigest:
    program_topics = [t for p in programs for t in (p.topics or [])]
    chosen = digest_render.choose_articles(ctx.candidates, received, employee.digest_topics, program_topics)
    sessions = sorted((s for p in programs for s in ctx.upcoming_sessions.get(p.id, ())), key=lambda s: (s.starts_at, s.id))
    return digest_render.render(settings, ctx.organisation, employee, iso_week, chosen, programs, ctx.today, preview, sessions)


def preview(session: Session, settings: Settings, employee_id: int, iso_week: str | None = None, now: datetime | None = None) -> dict:
    """The digest ``employee_id`` would get for ``iso_week`` if it were sent now."""
    now = now or utcnow()
    iso_week = iso_week or iso_week_of(now.date())
    try:
        parse_iso_week(iso_week)
    except ValueError as error:
        raise InvalidInput("The week is not valid.", errors={"week": [str(error)]}) from None
    employee = employees.get_employee(session, employee_id)
    ctx = batch_context(session, now.date(), now)
    rendered = personalise(settings, ctx, employee, iso_week, received_articles(session, [employee.id])[employee.id],
                           current_programs(session, [employee.id], now.date())[employee.id], preview=True)
    existing = session.scalar(select(DigestSend).where(DigestSend.employee_id == employee.id, DigestSend.iso_week == iso_week))
    return {
        "employee_id": employee.id, "iso_week": iso_week, "subject": rendered.subject, "html": rendered.html,
        "text": rendered.text, "article_ids": rendered.article_ids,
        "skip_reason": "nothing new" if rendered.empty else None,
        "send_state": existing.state.value if existing else None,
    }


def sample_message(session: Session, settings: Settings, user: User, employee_id: int | None, iso_week: str | None = None) -> bytes:
    """A copy of an employee's digest addressed to the HR admin; its links are inert
    previews (they neither unsubscribe nor record a pulse answer)."""
    from email.utils import make_msgid

    if employee_id is None:
        employee_id = session.scalar(select(Employee.id).where(Employee.status == EmployeeStatus.ACTIVE).order_by(Employee.id).limit(1))
        if employee_id is None:
            raise InvalidInput("Add an employee first: a test digest shows one employee's digest.",
                               errors={"employee_id": ["No active employee to preview."]})
    now = utcnow()
    iso_week = iso_week or iso_week_of(now.date())
    employee = employees.get_employee(session, employee_id)
    ctx = batch_context(session, now.date())
    rendered = personalise(settings, ctx, employee, iso_week, received_articles(session, [employee.id])[employee.id],
                           current_programs(session, [employee.id], now.date())[employee.id], preview=True)
    return digest_render.build_raw(settings, user.email, rendered, make_msgid(domain=digest_render.mail_domain(settings)), "[Test] ")


# ---- sending -----------------------------------------------------------------------------

class RateLimiter:
    """A per-organisation messages-per-second limit shared by every worker: a fixed
    one-second window counter (INCR + EXPIRE) on the broker's Redis. Without Redis
    (embedded default: one worker) there is nothing to share and no limit is applied."""

    def __init__(self, redis_url: str | None):
        self._client = None
        if redis_url and redis_url.startswith(("redis://", "rediss://")):
            import redis

            self._client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)

    def acquire(self, org_id: int, per_second: int) -> None:
        if self._client is None:
            return
        while True:
            now = time.time()
            key = f"wellbeing:digest-rate:{org_id}:{int(now)}"
            try:
                pipe = self._client.pipeline()
                pipe.incr(key)
                pipe.expire(key, 2)
                count = pipe.execute()[0]
            except Exception as error:  # noqa: BLE001 - Redis down: do not stall delivery
                log.warning("digest rate limiter unavailable (%s); sending unthrottled", error)
                return
            if count <= per_second:
                return
            time.sleep(max(0.001, 1 - (now - int(now))))


@dataclass
class BatchOutcome:
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    retry_ids: list[int] = field(default_factory=list)
    retry_delay: float = 0.0
    paused: bool = False


def backoff(attempts: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: base * 2^(attempts-1), capped, times 0.5..1."""
    return min(cap, base * 2 ** max(0, attempts - 1)) * random.uniform(0.5, 1.0)


def _smtp_code(error: Exception) -> int | None:
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        codes = [c for c, _ in error.recipients.values()]
        return max(codes) if codes else None
    if isinstance(error, smtplib.SMTPResponseException):
        return error.smtp_code
    return None


def _error_text(error: Exception) -> str:
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        answers = [f"{c} {m.decode(errors='replace') if isinstance(m, bytes) else m}" for c, m in error.recipients.values()]
        return "; ".join(answers)[:1000]
    if isinstance(error, smtplib.SMTPResponseException):
        message = error.smtp_error.decode(errors="replace") if isinstance(error.smtp_error, bytes) else str(error.smtp_error)
        return f"{error.smtp_code} {message}"[:1000]
    return f"{type(error).__name__}: {error}"[:1000]


def _skip_reason(employee: Employee | None, today: date, suppressed: bool) -> str | None:
    if employee is None:
        return "employee erased"
    if employee.status != EmployeeStatus.ACTIVE:
        return "employee left"
    if not employee.digest_consent:
        return "no digest consent"
    if employee.paused_until is not None and employee.paused_until >= today:
        return "paused by employee"
    if suppressed:
        return "address suppressed"
    return None


class _Connection:
    """One SMTP connection per batch, opened lazily and reopened after a drop."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._cm = None
        self.client: smtplib.SMTP | None = None

    def get(self) -> smtplib.SMTP:
        if self.client is None:
            self._cm = mail.smtp_connection(self._settings.smtp, timeout=30)
            self.client = self._cm.__enter__()
        return self.client

    def drop(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception:  # noqa: BLE001
                pass
        self.client, self._cm = None, None

    def close(self) -> None:
        if self._cm is not None:
            try:
                self._cm.__exit__(None, None, None)
            except Exception:  # noqa: BLE001
                pass
        self.client, self._cm = None, None


def claim(session: Session, send_ids: list[int], worker: str, now: datetime) -> list[int]:
    """Atomically take the still-queued rows among ``send_ids`` for ``worker``."""
    session.execute(
        update(DigestSend)
        .where(DigestSend.id.in_(send_ids), DigestSend.state == SendState.QUEUED,
               or_(DigestSend.next_attempt_at.is_(None), DigestSend.next_attempt_at <= now + timedelta(seconds=5)))
        .values(state=SendState.SENDING, claimed_by=worker, claimed_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return list(session.scalars(select(DigestSend.id).where(
        DigestSend.id.in_(send_ids), DigestSend.claimed_by == worker, DigestSend.state == SendState.SENDING).order_by(DigestSend.id)))


def _release(session: Session, ids: list[int], worker: str, now: datetime, enqueued_at: datetime | None) -> None:
    if ids:
        session.execute(
            update(DigestSend).where(DigestSend.id.in_(ids), DigestSend.claimed_by == worker, DigestSend.state == SendState.SENDING)
            .values(state=SendState.QUEUED, claimed_by=None, claimed_at=None, updated_at=now, enqueued_at=enqueued_at)
            .execution_options(synchronize_session=False))


def _finish(session: Session, send_id: int, worker: str, count_attempt: bool = True, **values) -> bool:  # noqa: ANN003
    """Record an outcome, only while the claim is still ours (a reclaimed row is not ours)."""
    values.setdefault("updated_at", utcnow())
    if count_attempt:
        values["attempts"] = DigestSend.attempts + 1
    result = session.execute(
        update(DigestSend).where(DigestSend.id == send_id, DigestSend.claimed_by == worker, DigestSend.state == SendState.SENDING)
        .values(claimed_by=None, **values).execution_options(synchronize_session=False))
    return bool(result.rowcount)


def _hard_failure(session: Session, email: str, error: str, now: datetime) -> None:
    row = session.scalar(select(SuppressedAddress).where(SuppressedAddress.email == email))
    if row is None:
        row = SuppressedAddress(email=email, hard_failures=0)
        session.add(row)
    row.hard_failures += 1
    row.last_error = error
    row.updated_at = now
    if row.hard_failures >= HARD_FAILURE_LIMIT and row.suppressed_at is None:
        row.suppressed_at = now


def _hold(session: Session, ids: list[int], worker: str) -> None:
    """Heartbeat: refresh this worker's claims so recovery knows it is alive."""
    session.execute(update(DigestSend).where(DigestSend.id.in_(ids), DigestSend.claimed_by == worker,
                                             DigestSend.state == SendState.SENDING)
                    .values(claimed_at=utcnow()).execution_options(synchronize_session=False))


def process_batch(db: Database, settings: Settings, org_id: int, send_ids: list[int], worker: str,
                  limiter: RateLimiter | None = None, retry_base: float | None = None) -> BatchOutcome:
    """Claim, re-check, personalise, render and send one batch over one SMTP connection.
    Safe to call any number of times with the same ids: only queued rows are claimed,
    and each outcome is recorded only while the claim is still this worker's."""
    outcome = BatchOutcome()
    retry_base = settings.digest_retry_base_seconds if retry_base is None else retry_base
    with db.session(org_id) as session:
        config = get_settings(session)
        if config.paused:
            outcome.paused = True
            return outcome
        claimed = claim(session, send_ids, worker, utcnow())
        rate = config.rate_per_second
    if not claimed:
        return outcome
    connection = _Connection(settings)
    sender = digest_render.envelope_sender(settings)
    remaining = list(claimed)
    last_beat = time.monotonic()
    session = db.open(org_id)
    sqlite = db.is_sqlite
    try:
        today = utcnow().date()
        ctx = batch_context(session, today)
        rows = session.execute(select(DigestSend.id, DigestSend.employee_id).where(DigestSend.id.in_(claimed))).all()
        employee_ids = list({eid for _, eid in rows})
        received = received_articles(session, employee_ids)
        programs = current_programs(session, employee_ids, today)
        suppressed = {r.email: (r.id, r.hard_failures, r.suppressed_at) for r in session.scalars(select(SuppressedAddress).where(
            SuppressedAddress.email.in_(select(Employee.email).where(Employee.id.in_(employee_ids)))))}
        session.commit()
        while remaining:
            send_id = remaining[0]
            if time.monotonic() - last_beat > HEARTBEAT_SECONDS:
                if get_settings(session).paused:
                    _release(session, remaining, worker, utcnow(), None)
                    session.commit()
                    outcome.paused = True
                    return outcome
                _hold(session, remaining, worker)
                session.commit()
                last_beat = time.monotonic()
            # Re-checked right before SMTP, in a fresh transaction: consent withdrawn,
            # unsubscribed, left, paused or erased since the row was queued means no mail.
            row = session.execute(select(DigestSend.iso_week, Employee).outerjoin(Employee, Employee.id == DigestSend.employee_id).where(
                DigestSend.id == send_id, DigestSend.claimed_by == worker, DigestSend.state == SendState.SENDING)).first()
            if row is None:  # reclaimed by recovery after a stall: not ours any more
                session.commit()
                remaining.pop(0)
                continue
            iso_week, employee = row
            suppression = suppressed.get(employee.email) if employee is not None else None
            reason = _skip_reason(employee, utcnow().date(), suppression is not None and suppression[2] is not None)
            rendered = None
            if reason is None:
                rendered = personalise(settings, ctx, employee, iso_week, received.get(employee.id, set()), programs.get(employee.id, []))
                if rendered.empty:
                    reason = "nothing new"
            if reason is not None:
                _finish(session, send_id, worker, state=SendState.SKIPPED, skip_reason=reason, count_attempt=False)
                session.commit()
                outcome.skipped += 1
                remaining.pop(0)
                continue
            recipient, employee_id = employee.email, employee.id
            if sqlite:
                # SQLite: end the read transaction (its snapshot) before the SMTP exchange,
                # or the write that records the outcome could meet a newer snapshot. On
                # PostgreSQL (read committed) the outcome's transaction just carries on.
                session.commit()
            msg_id = digest_render.message_id(settings, send_id, iso_week)
            raw = digest_render.build_raw(settings, recipient, rendered, msg_id)
            if limiter is not None:
                limiter.acquire(org_id, rate)
            try:
                client = connection.get()
            except (OSError, smtplib.SMTPException) as error:
                # Cannot reach the server at all: everything left waits for a retry.
                delay = backoff(1, retry_base, settings.digest_retry_max_seconds)
                _release(session, remaining, worker, utcnow(), utcnow() + timedelta(seconds=delay))
                session.execute(update(DigestSend).where(DigestSend.id == send_id).values(last_error=_error_text(error))
                                .execution_options(synchronize_session=False))
                session.commit()
                outcome.retry_ids += remaining
                outcome.retry_delay = max(outcome.retry_delay, delay)
                remaining = []
                break
            try:
                client.sendmail(sender, [recipient], raw)
            except (OSError, smtplib.SMTPException) as error:
                code = _smtp_code(error)
                text = _error_text(error)
                if code is None or code == 421 or not (400 <= code < 600) or isinstance(error, smtplib.SMTPServerDisconnected):
                    connection.drop()
                current = session.scalar(select(DigestSend.attempts).where(DigestSend.id == send_id)) or 0
                if code is not None and code >= 500:
                    if _finish(session, send_id, worker, state=SendState.FAILED, last_error=text):
                        if not isinstance(error, smtplib.SMTPSenderRefused):
                            _hard_failure(session, recipient, text, utcnow())
                    outcome.failed += 1
                elif current + 1 >= MAX_ATTEMPTS:
                    _finish(session, send_id, worker, state=SendState.FAILED, last_error=f"gave up after {current + 1} attempts: {text}"[:1000])
                    outcome.failed += 1
                else:
                    delay = backoff(current + 1, retry_base, settings.digest_retry_max_seconds)
                    at = utcnow() + timedelta(seconds=delay)
                    if _finish(session, send_id, worker, state=SendState.QUEUED, last_error=text, next_attempt_at=at,
                               enqueued_at=at, claimed_at=None):
                        outcome.retry_ids.append(send_id)
                        outcome.retry_delay = max(outcome.retry_delay, delay)
                session.commit()
                remaining.pop(0)
                continue
            # Accepted by the server: record it at once. A crash inside this one short
            # commit is the only way a digest can be handed over twice (with the same
            # Message-ID, so receivers can tell).
            if _finish(session, send_id, worker, state=SendState.SENT, sent_at=utcnow(), message_id=msg_id,
                       recipient=recipient, last_error=None, next_attempt_at=None):
                if rendered.article_ids:
                    session.execute(insert(DigestItem), [
                        {"org_id": org_id, "send_id": send_id, "employee_id": employee_id, "article_id": a, "position": i}
                        for i, a in enumerate(rendered.article_ids)])
                if suppression is not None and suppression[1] and suppression[2] is None:
                    session.execute(update(SuppressedAddress).where(SuppressedAddress.id == suppression[0])
                                    .values(hard_failures=0).execution_options(synchronize_session=False))
                outcome.sent += 1
                received.setdefault(employee_id, set()).update(rendered.article_ids)
            session.commit()
            remaining.pop(0)
    except BaseException:
        # An unexpected error (not a SIGKILL, which leaves the claim to recovery): put
        # what this worker still holds back in the queue for another try.
        session.rollback()
        try:
            _release(session, remaining, worker, utcnow(), None)
            session.commit()
        except Exception:  # noqa: BLE001
            log.exception("could not release digest claims; recovery will")
        raise
    finally:
        session.close()
        connection.close()
    return outcome


# ---- recovery ----------------------------------------------------------------------------

def recover(db: Database, now: datetime | None = None, claim_timeout: timedelta = CLAIM_TIMEOUT,
            requeue_after: timedelta = REQUEUE_AFTER) -> dict[int, list[list[int]]]:
    """Platform-wide sweep (beat): sends claimed by a worker that stopped heartbeating go
    back to the queue (or fail after MAX_ATTEMPTS), and queued sends whose task was lost
    (broker restart, worker killed) are enqueued again. Returns org id -> batches."""
    now = now or utcnow()
    found: dict[int, list[int]] = {}
    with db.session(unscoped=True) as session:
        stale = DigestSend.claimed_at < now - claim_timeout
        session.execute(update(DigestSend).where(DigestSend.state == SendState.SENDING, stale, DigestSend.attempts + 1 >= MAX_ATTEMPTS)
                        .values(state=SendState.FAILED, claimed_by=None, attempts=DigestSend.attempts + 1, updated_at=now,
                                last_error="worker lost while sending, too many times")
                        .execution_options(synchronize_session=False))
        session.execute(update(DigestSend).where(DigestSend.state == SendState.SENDING, stale)
                        .values(state=SendState.QUEUED, claimed_by=None, claimed_at=None, attempts=DigestSend.attempts + 1,
                                enqueued_at=None, updated_at=now)
                        .execution_options(synchronize_session=False))
        paused = select(DigestSettings.org_id).where(DigestSettings.paused.is_(True))
        rows = session.execute(select(DigestSend.org_id, DigestSend.id).where(
            DigestSend.state == SendState.QUEUED,
            or_(DigestSend.enqueued_at.is_(None), DigestSend.enqueued_at < now - requeue_after),
            DigestSend.org_id.not_in(paused)).order_by(DigestSend.org_id, DigestSend.id)).all()
        for org_id, send_id in rows:
            found.setdefault(org_id, []).append(send_id)
        batches = {org_id: _mark_enqueued(session, ids, now) for org_id, ids in found.items()}
    return batches


def orgs_for_due_check(db: Database) -> list[int]:
    with db.session(unscoped=True) as session:
        paused = select(DigestSettings.org_id).where(DigestSettings.paused.is_(True))
        return list(session.scalars(select(Organisation.id).where(Organisation.id.not_in(paused)).order_by(Organisation.id)))


# ---- employee-facing actions (signed links) ----------------------------------------------

def unsubscribe(session: Session, link: digest_render.EmployeeLink) -> Employee:
    """One-click unsubscribe: digest consent off at once (every later send re-checks it)."""
    employee = employees.employee_for_link(session, link.employee_id, link.epoch)
    if not link.preview:
        employees.record_consent(session, employee, employees.ConsentKind.DIGEST_EMAILS, False, employees.ConsentSource.EMPLOYEE_LINK)
        employee.updated_at = utcnow()
    return employee


def record_pulse(session: Session, link: digest_render.EmployeeLink) -> tuple[Employee, bool]:
    """Record a pulse answer (only with analytics consent; the link works either way).
    Answering again the same week changes the answer. Returns (employee, stored)."""
    employee = employees.employee_for_link(session, link.employee_id, link.epoch)
    if link.preview or not employee.analytics_consent:
        return employee, False
    row = session.scalar(select(PulseResponse).where(PulseResponse.employee_id == employee.id, PulseResponse.iso_week == link.iso_week))
    if row is None:
        row = PulseResponse(employee_id=employee.id, iso_week=link.iso_week, score=link.score)
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
            return employee, True
        except IntegrityError:
            row = session.scalar(select(PulseResponse).where(PulseResponse.employee_id == employee.id, PulseResponse.iso_week == link.iso_week))
    row.score, row.answered_at = link.score, utcnow()
    return employee, True


def _erase(session: Session, employee_id: int) -> None:
    email = session.scalar(select(Employee.email).where(Employee.id == employee_id))
    for model in (DigestItem, PulseResponse, DigestSend):
        session.execute(delete(model).where(model.employee_id == employee_id).execution_options(synchronize_session=False))
    if email:
        session.execute(delete(SuppressedAddress).where(SuppressedAddress.email == email).execution_options(synchronize_session=False))


if _erase not in employees.ERASURE_HOOKS:
    employees.ERASURE_HOOKS.append(_erase)

