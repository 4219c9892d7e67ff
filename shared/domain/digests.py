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
import sys
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import Integer, String, and_, bindparam, case, delete, func, insert, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared import mail
from shared.config import Settings
from shared.db import Database, UTCDateTime, plan_with_values, utcnow
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
from shared.pagination import list_query

log = logging.getLogger(__name__)

BATCH_SIZE = 250
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
# Sends re-checked together right before SMTP and recorded together after it (one query
# and one commit per chunk instead of per message; see process_batch).
CHUNK_SIZE = 20
FIRST_CHUNK_SIZE = 5
SMTP_THREAD_SWITCH_INTERVAL = 0.001
# The crash bound that follows: a worker killed mid-batch leaves at most two chunks
# accepted by the server but not recorded as sent, handed over again with the same Message-ID.
MAX_REDELIVERED_PER_CRASH = 2 * CHUNK_SIZE
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


def _insert_sends(session: Session, org_id: int, iso_week: str, run_id: int, now: datetime, where) -> list[int]:  # noqa: ANN001
    """Create the week's sends for the employees ``where`` selects who have none yet,
    marked enqueued at ``now`` (their batches are published once this commits; if that
    never happens, recovery finds them by that time). Returns the new rows' ids, in order."""
    table = DigestSend.__table__
    # Employees who have a send for the week already are left to ON CONFLICT (one probe
    # of the unique index per row), not excluded by NOT EXISTS: the statement inserts into
    # the table that subquery reads, and without statistics on a new organisation's rows
    # PostgreSQL ran it as a scan of every send of the week per employee, seeing each row
    # this statement had inserted (20,000 employees: 14 s; quadratic).
    source = (
        select(
            literal(org_id), Employee.id, literal(iso_week), literal(run_id), literal(SendState.QUEUED.value),
            literal(0), literal(now, UTCDateTime()), literal(now, UTCDateTime()), literal(now, UTCDateTime()),
        )
        # INSERT ... SELECT is not an ORM query, so the tenant guard cannot scope it: the
        # organisation is named here explicitly.
        .where(Employee.org_id == org_id, where)
    )
    columns = ["org_id", "employee_id", "iso_week", "run_id", "state", "attempts", "created_at", "updated_at", "enqueued_at"]
    statement = _dialect_insert(session)(table).from_select(columns, source).on_conflict_do_nothing(
        index_elements=["employee_id", "iso_week"]).returning(table.c.id)
    return sorted(session.scalars(statement))


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


def _batches(ids: list[int]) -> list[list[int]]:
    return [ids[i:i + BATCH_SIZE] for i in range(0, len(ids), BATCH_SIZE)]


def _mark_enqueued(session: Session, ids: list[int], at: datetime) -> list[list[int]]:
    batches = _batches(ids)
    for batch in batches:
        session.execute(update(DigestSend).where(DigestSend.id.in_(batch)).values(enqueued_at=at)
                        .execution_options(synchronize_session=False))
    return batches


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
        run, created = None, []
        for start in range(0, len(week_combos), 200):
            chunk = week_combos[start:start + 200]
            match = or_(*(and_(Employee.timezone == tz, Employee.digest_weekday == wd, Employee.digest_hour == hr) for tz, wd, hr in chunk))
            pending = session.scalar(select(func.count()).select_from(Employee).where(
                eligible, match, ~select(DigestSend.id).where(DigestSend.employee_id == Employee.id, DigestSend.iso_week == iso_week).exists()))
            if not pending:
                continue
            run = run or _scheduled_run(session, org_id, iso_week)
            created += _insert_sends(session, org_id, iso_week, run.id, now, and_(eligible, match))
        if run is not None:
            result.runs[run.id] = len(created)
            run.created_count += len(created)
            run.updated_at = now
            result.batches += _batches(sorted(created))
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
    created = _insert_sends(session, org_id, iso_week, run.id, now, _eligible(now.date()))
    run.created_count = len(created)
    audit.record(session, actor, "digest.run_started", "digest_run", run.id, {"week": iso_week, "created": run.created_count}, org_id=org_id)
    return run, _batches(created)


# ---- runs, sends and their counts ---------------------------------------------------------

def get_run(session: Session, run_id: int) -> DigestRun:
    run = session.get(DigestRun, run_id)
    if run is None:
        raise NotFound(f"Digest run {run_id} not found")
    return run


@list_query
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


@list_query
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


@list_query
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
    # shapes of digest rendered so far, and what every recipient sees of an article (filled by render)
    render_cache: digest_render.RenderCache = field(default_factory=digest_render.RenderCache)


def batch_context(session: Session, today: date, now: datetime | None = None) -> BatchContext:
    organisation = accounts.get_organisation(session, session.info["org_id"])
    return BatchContext(organisation, article_domain.articles_for_employees(session, today=today), today,
                        program_sessions.upcoming_by_program(session, now or utcnow()))


def received_articles(session: Session, employee_ids: list[int]) -> dict[int, set[int]]:
    got: dict[int, set[int]] = {e: set() for e in employee_ids}
    if employee_ids:
        # A batch's few hundred ids: with a generic plan, each row of a sequential scan
        # (a new organisation's first weeks, before statistics) was compared with every
        # id, 175-325 ms a batch at 100,000 items; with the values, one hashed look-up.
        plan_with_values(session)
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
    return digest_render.render(settings, ctx.organisation, employee, iso_week, chosen, programs, ctx.today, preview, sessions,
                                ctx.render_cache)


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

    def acquire(self, org_id: int, per_second: int, count: int = 1) -> None:
        """Take ``count`` messages (at most ``per_second``) from the current second's
        allowance, waiting for the next second while it is spent."""
        if self._client is None:
            return
        while True:
            now = time.time()
            key = f"wellbeing:digest-rate:{org_id}:{int(now)}"
            try:
                pipe = self._client.pipeline()
                pipe.incrby(key, count)
                pipe.expire(key, 2)
                taken = pipe.execute()[0]
            except Exception as error:  # noqa: BLE001 - Redis down: do not stall delivery
                log.warning("digest rate limiter unavailable (%s); sending unthrottled", error)
                return
            if taken <= per_second:
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


def claim(session: Session, send_ids: list[int], worker: str, now: datetime) -> dict[int, int]:
    """Atomically take the still-queued rows among ``send_ids`` for ``worker`` (and those
    it holds already). Returns send id -> employee id, in send id order."""
    plan_with_values(session)  # a batch's ids (see received_articles)
    claimed = session.execute(
        update(DigestSend)
        .where(DigestSend.id.in_(send_ids), or_(
            and_(DigestSend.state == SendState.QUEUED,
                 or_(DigestSend.next_attempt_at.is_(None), DigestSend.next_attempt_at <= now + timedelta(seconds=5))),
            and_(DigestSend.state == SendState.SENDING, DigestSend.claimed_by == worker)))
        .values(state=SendState.SENDING, claimed_by=worker, claimed_at=now, updated_at=now)
        .returning(DigestSend.id, DigestSend.employee_id)
        .execution_options(synchronize_session=False)
    ).all()
    return dict(sorted(tuple(row) for row in claimed))


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


@dataclass
class _Delivery:
    """One send of a chunk, from its re-check to its recorded outcome."""

    send_id: int
    employee_id: int | None
    attempts: int
    skip_reason: str | None = None
    recipient: str = ""
    message_id: str = ""
    raw: bytes = b""
    article_ids: list[int] = field(default_factory=list)
    suppression: tuple | None = None
    # The outcome, once decided (None: not handed to SMTP yet).
    state: SendState | None = None
    error: str | None = None
    hard_failure: bool = False
    retry_at: datetime | None = None


def _prepare_chunk(session: Session, settings: Settings, ctx: BatchContext, chunk: list[int], worker: str,
                   received: dict[int, set[int]], programs: dict[int, list[Program]]) -> list[_Delivery]:
    """The re-check of a chunk, right before its messages go out, in one query: consent
    withdrawn, unsubscribed, left, paused, erased or suppressed since the row was queued
    means no mail. Rows no longer claimed by this worker (recovery took them after a
    stall) drop out. Every remaining send is personalised and rendered."""
    rows = session.execute(
        select(DigestSend.id, DigestSend.iso_week, DigestSend.attempts, Employee,
               SuppressedAddress.id, SuppressedAddress.hard_failures, SuppressedAddress.suppressed_at)
        .outerjoin(Employee, Employee.id == DigestSend.employee_id)
        .outerjoin(SuppressedAddress, SuppressedAddress.email == Employee.email)
        .where(DigestSend.id.in_(chunk), DigestSend.claimed_by == worker, DigestSend.state == SendState.SENDING)
        .order_by(DigestSend.id).execution_options(populate_existing=True)).all()
    today = utcnow().date()
    deliveries = []
    for send_id, iso_week, attempts, employee, *suppression_row in rows:
        delivery = _Delivery(send_id, employee.id if employee is not None else None, attempts)
        deliveries.append(delivery)
        suppression = tuple(suppression_row) if suppression_row[0] is not None else None
        delivery.skip_reason = _skip_reason(employee, today, suppression is not None and suppression[2] is not None)
        if delivery.skip_reason is not None:
            delivery.state = SendState.SKIPPED
            continue
        rendered = personalise(settings, ctx, employee, iso_week, received.get(employee.id, set()), programs.get(employee.id, []))
        if rendered.empty:
            delivery.state, delivery.skip_reason = SendState.SKIPPED, "nothing new"
            continue
        delivery.recipient, delivery.suppression, delivery.article_ids = employee.email, suppression, rendered.article_ids
        # Counted as received now, so a later send of this batch to the same employee
        # (another week) does not repeat them; if this one fails, that one just skips them.
        received.setdefault(employee.id, set()).update(rendered.article_ids)
        delivery.message_id = digest_render.message_id(settings, send_id, iso_week)
        delivery.raw = digest_render.build_raw(settings, delivery.recipient, rendered, delivery.message_id)
    return deliveries


def _smtp_error(delivery: _Delivery, error: Exception, connection: _Connection, settings: Settings, retry_base: float) -> None:
    """Decide a refused message's outcome: 5xx fails it, 4xx and connection errors
    retry it with backoff until MAX_ATTEMPTS."""
    code = _smtp_code(error)
    text = _error_text(error)
    if code is None or code == 421 or not (400 <= code < 600) or isinstance(error, smtplib.SMTPServerDisconnected):
        connection.drop()
    if code is not None and code >= 500:
        delivery.state, delivery.error = SendState.FAILED, text
        delivery.hard_failure = not isinstance(error, smtplib.SMTPSenderRefused)
    elif delivery.attempts + 1 >= MAX_ATTEMPTS:
        delivery.state, delivery.error = SendState.FAILED, f"gave up after {delivery.attempts + 1} attempts: {text}"[:1000]
    else:
        delay = backoff(delivery.attempts + 1, retry_base, settings.digest_retry_max_seconds)
        delivery.state, delivery.error, delivery.retry_at = SendState.QUEUED, text, utcnow() + timedelta(seconds=delay)


def _record(session: Session, org_id: int, worker: str, deliveries: list[_Delivery], outcome: BatchOutcome) -> None:
    """Record the decided outcomes of a chunk, each only while the claim is still this
    worker's, in a few statements: the sent rows and their digest items together (see
    _mark_sent), the skipped rows one UPDATE per reason; failures and retries (rare) one
    by one. Undecided deliveries (not handed to SMTP) are left alone."""
    now = utcnow()
    sent = [d for d in deliveries if d.state == SendState.SENT]
    if sent:
        ours = _mark_sent(session, org_id, worker, sent, now)
        sent = [d for d in sent if d.send_id in ours]
        for d in sent:
            if d.suppression is not None and d.suppression[1] and d.suppression[2] is None:
                session.execute(update(SuppressedAddress).where(SuppressedAddress.id == d.suppression[0])
                                .values(hard_failures=0).execution_options(synchronize_session=False))
        outcome.sent += len(sent)
    skipped: dict[str, list[int]] = {}
    for d in deliveries:
        if d.state == SendState.SKIPPED:
            skipped.setdefault(d.skip_reason, []).append(d.send_id)
    for reason, ids in skipped.items():
        result = session.execute(
            update(DigestSend).where(DigestSend.id.in_(ids), DigestSend.claimed_by == worker, DigestSend.state == SendState.SENDING)
            .values(state=SendState.SKIPPED, skip_reason=reason, claimed_by=None, updated_at=now)
            .execution_options(synchronize_session=False))
        outcome.skipped += result.rowcount
    for d in deliveries:
        if d.state == SendState.FAILED:
            if _finish(session, d.send_id, worker, state=SendState.FAILED, last_error=d.error) and d.hard_failure:
                _hard_failure(session, d.recipient, d.error, now)
            outcome.failed += 1
        elif d.state == SendState.QUEUED:
            if _finish(session, d.send_id, worker, state=SendState.QUEUED, last_error=d.error, next_attempt_at=d.retry_at,
                       enqueued_at=d.retry_at, claimed_at=None):
                outcome.retry_ids.append(d.send_id)
                outcome.retry_delay = max(outcome.retry_delay, (d.retry_at - now).total_seconds())


_ITEM_COLUMNS = ("org_id", "send_id", "employee_id", "article_id", "position")


def _mark_sent_from_arrays():
    """PostgreSQL: a chunk's sent rows marked sent (those still claimed by the worker) and
    their digest items inserted, in one statement whose text never changes (built once):
    the values travel as arrays, so the server runs one statement, not one per row, and
    neither SQLAlchemy nor psycopg builds a new query per chunk. Run on the session's
    connection, past the ORM (whose tenant guard does not understand a DML CTE): the
    organisation is named explicitly."""
    sends = DigestSend.__table__
    sent = func.unnest(*(bindparam(name, type_=postgresql.ARRAY(kind)) for name, kind in
                         (("send_ids", Integer), ("message_ids", String), ("recipients", String)))
                       ).table_valued("id", "message_id", "recipient").render_derived()
    now = bindparam("now", type_=UTCDateTime())
    marked = (update(sends).where(sends.c.id == sent.c.id, sends.c.org_id == bindparam("org"), sends.c.claimed_by == bindparam("worker"),
                                  sends.c.state == SendState.SENDING)
              .values(state=SendState.SENT, claimed_by=None, attempts=sends.c.attempts + 1, sent_at=now, updated_at=now,
                      last_error=None, next_attempt_at=None, message_id=sent.c.message_id, recipient=sent.c.recipient)
              .returning(sends.c.id).cte("marked"))
    items = func.unnest(*(bindparam(f"item_{c}", type_=postgresql.ARRAY(Integer)) for c in _ITEM_COLUMNS)
                        ).table_valued(*_ITEM_COLUMNS).render_derived()
    added = insert(DigestItem.__table__).from_select(list(_ITEM_COLUMNS), select(*items.c).where(
        items.c.send_id.in_(select(marked.c.id)))).cte("added")
    return select(marked.c.id).add_cte(added)


_MARK_SENT_FROM_ARRAYS = _mark_sent_from_arrays()


def _mark_sent(session: Session, org_id: int, worker: str, sent: list[_Delivery], now: datetime) -> set[int]:
    """Mark sent the rows of ``sent`` still claimed by ``worker`` and insert their digest
    items. Returns the ids marked."""
    items = [(org_id, d.send_id, d.employee_id, article_id, position) for d in sent for position, article_id in enumerate(d.article_ids)]
    if session.get_bind().dialect.name == "postgresql":
        columns = list(zip(*items)) if items else [()] * len(_ITEM_COLUMNS)
        return set(session.connection().scalars(_MARK_SENT_FROM_ARRAYS, {
            "org": org_id, "worker": worker, "now": now, "send_ids": [d.send_id for d in sent],
            "message_ids": [d.message_id for d in sent], "recipients": [d.recipient for d in sent],
            **{f"item_{c}": list(values) for c, values in zip(_ITEM_COLUMNS, columns)}}))
    # SQLite (in-process: statements cost no round trips): one UPDATE, then the items as an executemany.
    ours = set(session.scalars(
        update(DigestSend).where(DigestSend.id.in_([d.send_id for d in sent]), DigestSend.claimed_by == worker,
                                 DigestSend.state == SendState.SENDING)
        .values(state=SendState.SENT, claimed_by=None, attempts=DigestSend.attempts + 1, sent_at=now, updated_at=now,
                last_error=None, next_attempt_at=None,
                message_id=case({d.send_id: d.message_id for d in sent}, value=DigestSend.id),
                recipient=case({d.send_id: d.recipient for d in sent}, value=DigestSend.id))
        .returning(DigestSend.id).execution_options(synchronize_session=False)))
    rows = [dict(zip(_ITEM_COLUMNS, item)) for item in items if item[1] in ours]
    if rows:
        session.execute(insert(DigestItem), rows)
    return ours


def _send_chunk(connection: _Connection, sender: str, deliveries: list[_Delivery], settings: Settings, retry_base: float,
                limiter: RateLimiter | None, org_id: int, rate: int) -> Exception | None:
    """Hand a chunk's rendered messages to SMTP, deciding each one's outcome. Returns the
    error if the server cannot be reached at all (the rest of the chunk stays undecided)."""
    to_send = [d for d in deliveries if d.state is None]
    if to_send and limiter is not None:
        limiter.acquire(org_id, rate, len(to_send))
    for delivery in to_send:
        try:
            client = connection.get()
        except (OSError, smtplib.SMTPException) as error:
            return error
        try:
            client.sendmail(sender, [delivery.recipient], delivery.raw)
        except (OSError, smtplib.SMTPException) as error:
            _smtp_error(delivery, error, connection, settings, retry_base)
        else:
            delivery.state = SendState.SENT
    return None


def process_batch(db: Database, settings: Settings, org_id: int, send_ids: list[int], worker: str,
                  limiter: RateLimiter | None = None, retry_base: float | None = None) -> BatchOutcome:
    """Claim, re-check, personalise, render and send one batch over one SMTP connection.
    Safe to call any number of times with the same ids: only queued rows are claimed,
    and each outcome is recorded only while the claim is still this worker's.

    The batch goes out in chunks of CHUNK_SIZE, two at a time: while a thread hands one
    chunk to SMTP, this one records the previous chunk's outcomes (one short transaction)
    and re-checks and renders the next (one query), so the database work and rendering
    overlap the SMTP exchange. A chunk is re-checked at most one chunk's sending time
    before its first message leaves. A worker killed mid-run leaves at most two chunks
    (the one being recorded, the one being sent) accepted by the server but not recorded
    as sent: recovery hands those over again, with the same Message-ID (receivers
    de-duplicate on it)."""
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
    # A chunk never needs more than one second's allowance of the rate limit.
    chunk_size = max(1, min(CHUNK_SIZE, rate))
    connection = _Connection(settings)
    sender = digest_render.envelope_sender(settings)
    smtp = ThreadPoolExecutor(max_workers=1, thread_name_prefix="digest-smtp")
    remaining = list(claimed)
    sending: Future | None = None
    sending_chunk: list[_Delivery] = []
    recording: list[_Delivery] = []
    next_chunk: list[_Delivery] = []
    last_beat = time.monotonic()
    session = db.open(org_id)
    switch_interval = sys.getswitchinterval()
    # The SMTP thread needs the GIL for a moment after each server reply; while this thread
    # renders, it waits for the interpreter's switch interval (5 ms by default) at each.
    # 1 ms made batches ~10% faster (bench/README.md); shorter gained nothing more.
    sys.setswitchinterval(SMTP_THREAD_SWITCH_INTERVAL)
    try:
        today = utcnow().date()
        ctx = batch_context(session, today)
        employee_ids = list(set(claimed.values()))
        received = received_articles(session, employee_ids)
        programs = current_programs(session, employee_ids, today)
        if db.is_sqlite:
            session.commit()  # end the read transaction (see the loop)
        while remaining or sending is not None:
            if remaining and time.monotonic() - last_beat > HEARTBEAT_SECONDS:
                if get_settings(session).paused:
                    # Stop handing mail over: what is not being sent already goes back to the queue.
                    _release(session, remaining, worker, utcnow(), None)
                    remaining, outcome.paused = [], True
                else:
                    _hold(session, remaining + [d.send_id for d in sending_chunk], worker)
                session.commit()
                last_beat = time.monotonic()
            if remaining:
                # The batch's first chunk is small: the SMTP exchange starts sooner.
                size = chunk_size if sending is not None else min(chunk_size, FIRST_CHUNK_SIZE)
                chunk, remaining = remaining[:size], remaining[size:]
                next_chunk = _prepare_chunk(session, settings, ctx, chunk, worker, received, programs)
                if db.is_sqlite:
                    # SQLite: end the read transaction (its snapshot) before the outcomes'
                    # write, or that write could meet a newer snapshot. On PostgreSQL (read
                    # committed) the outcomes' transaction just carries on.
                    session.commit()
            unreachable = None
            if sending is not None:
                unreachable = sending.result()
                sending, recording, sending_chunk = None, sending_chunk, []
            if next_chunk and unreachable is None:
                # The next chunk goes to SMTP before the previous one is recorded, so the
                # outcomes' transaction overlaps the SMTP exchange too.
                sending_chunk, next_chunk = next_chunk, []
                sending = smtp.submit(_send_chunk, connection, sender, sending_chunk, settings, retry_base, limiter, org_id, rate)
            if recording:
                _record(session, org_id, worker, recording, outcome)
                if unreachable is not None:
                    # Cannot reach the server at all: everything not yet sent waits for a retry.
                    _record(session, org_id, worker, next_chunk, outcome)
                    waiting = [d.send_id for d in recording + next_chunk if d.state is None] + remaining
                    delay = backoff(1, retry_base, settings.digest_retry_max_seconds)
                    _release(session, waiting, worker, utcnow(), utcnow() + timedelta(seconds=delay))
                    session.execute(update(DigestSend).where(DigestSend.id == waiting[0]).values(last_error=_error_text(unreachable))
                                    .execution_options(synchronize_session=False))
                    outcome.retry_ids += waiting
                    outcome.retry_delay = max(outcome.retry_delay, delay)
                    next_chunk, remaining = [], []
                session.commit()
                recording = []
    except BaseException:
        # An unexpected error (not a SIGKILL, which leaves the claims to recovery): record
        # what was decided, put what this worker still holds back in the queue.
        if sending is not None:
            wait([sending])
        session.rollback()
        try:
            held = recording + sending_chunk + next_chunk
            _record(session, org_id, worker, held, outcome)
            _release(session, [d.send_id for d in held if d.state is None] + remaining, worker, utcnow(), None)
            session.commit()
        except Exception:  # noqa: BLE001
            log.exception("could not release digest claims; recovery will")
        raise
    finally:
        sys.setswitchinterval(switch_interval)
        smtp.shutdown()
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

