"""Weekly digests: organisation settings, runs, one send per (employee, ISO week), the
articles each send carried, suppressed addresses and pulse answers."""
from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, Boolean, Enum, ForeignKey, Index, Integer, String, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, TenantOwned, utcnow


class SendState(str, enum.Enum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


class RunTrigger(str, enum.Enum):
    SCHEDULE = "schedule"
    MANUAL = "manual"


_state_enum = Enum(SendState, native_enum=False, length=10, values_callable=lambda e: [m.value for m in e], name="digest_send_state")
_trigger_enum = Enum(RunTrigger, native_enum=False, length=10, values_callable=lambda e: [m.value for m in e], name="digest_run_trigger")


class DigestSettings(TenantOwned, Base):
    """The organisation's digest rules (one row per organisation; defaults when absent)."""

    __tablename__ = "digest_settings"
    __table_args__ = (UniqueConstraint("org_id", name="uq_digest_settings_org_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # Local weekdays (0 = Monday) and hours [start, end) a digest may be sent in.
    send_weekdays: Mapped[list] = mapped_column(JSON, default=lambda: list(range(7)))
    window_start_hour: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    window_end_hour: Mapped[int] = mapped_column(Integer, default=24, server_default="24")
    # ISO dates (holidays) on which no digest is sent; it moves to the next allowed day.
    quiet_days: Mapped[list] = mapped_column(JSON, default=list)
    paused: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # Messages per second for the whole organisation, across all workers.
    rate_per_second: Mapped[int] = mapped_column(Integer, default=50, server_default="50")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class DigestRun(TenantOwned, Base):
    """A due-check or manual run that created sends for one ISO week. Scheduled runs
    have one row per organisation and week (``schedule_key``), shared by every tick."""

    __tablename__ = "digest_runs"
    __table_args__ = (UniqueConstraint("schedule_key", name="uq_digest_runs_schedule_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    iso_week: Mapped[str] = mapped_column(String(8), index=True)
    trigger: Mapped[RunTrigger] = mapped_column(_trigger_enum)
    schedule_key: Mapped[str | None] = mapped_column(String(40))
    started_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class DigestSend(TenantOwned, Base):
    """The unit of exactly-once delivery: created before any mail leaves, unique per
    employee and ISO week."""

    __tablename__ = "digest_sends"
    __table_args__ = (
        UniqueConstraint("employee_id", "iso_week", name="uq_digest_sends_employee_id_iso_week"),
        Index("ix_digest_sends_run_id_state", "run_id", "state"),
        Index("ix_digest_sends_org_id_state", "org_id", "state"),
        Index("ix_digest_sends_state_claimed_at", "state", "claimed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    employee_id: Mapped[int] = mapped_column(ForeignKey("employees.id", ondelete="CASCADE"))
    iso_week: Mapped[str] = mapped_column(String(8))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("digest_runs.id", ondelete="SET NULL"))
    state: Mapped[SendState] = mapped_column(_state_enum, default=SendState.QUEUED, server_default="queued")
    skip_reason: Mapped[str | None] = mapped_column(String(40))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(String(1000))
    message_id: Mapped[str | None] = mapped_column(String(255))
    recipient: Mapped[str | None] = mapped_column(String(254))
    claimed_by: Mapped[str | None] = mapped_column(String(120))
    claimed_at: Mapped[datetime | None]
    # When a task for this row was last published (or is next expected to run, for a
    # retry with backoff): queued rows left behind by a lost task are re-enqueued.
    enqueued_at: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class DigestItem(TenantOwned, Base):
    """An article a sent digest carried: an employee never receives the same article twice."""

    __tablename__ = "digest_items"
    __table_args__ = (UniqueConstraint("employee_id", "article_id", name="uq_digest_items_employee_id_article_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    send_id: Mapped[int] = mapped_column(ForeignKey("digest_sends.id", ondelete="CASCADE"), index=True)
    employee_id: Mapped[int] = mapped_column(ForeignKey("employees.id", ondelete="CASCADE"))
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)


class SuppressedAddress(TenantOwned, Base):
    """Hard failures (5xx) per address; at the limit the address is suppressed (no more
    digests) until an HR admin clears it."""

    __tablename__ = "digest_suppressions"
    __table_args__ = (UniqueConstraint("org_id", "email", name="uq_digest_suppressions_org_id_email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    hard_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(String(1000))
    suppressed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class PulseResponse(TenantOwned, Base):
    """A weekly pulse answer (1-5); stored only for employees who consented to analytics."""

    __tablename__ = "pulse_responses"
    __table_args__ = (UniqueConstraint("employee_id", "iso_week", name="uq_pulse_responses_employee_id_iso_week"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    employee_id: Mapped[int] = mapped_column(ForeignKey("employees.id", ondelete="CASCADE"))
    iso_week: Mapped[str] = mapped_column(String(8))
    score: Mapped[int] = mapped_column(Integer)
    answered_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


__all__ = ["DigestItem", "DigestRun", "DigestSend", "DigestSettings", "PulseResponse", "RunTrigger", "SendState", "SuppressedAddress"]
