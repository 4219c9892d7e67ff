"""Activity events (pseudonymous), the per-organisation analytics key, report settings,
the per-person weekly summary the reports are built from, built report cells, and the
release log of the anonymity engine.

Nothing here holds an email, a name or an employee id of the person an event is about:
events carry a keyed HMAC of the employee id (``pseudonym``); the key lives in
``analytics_keys``, never next to the events."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from shared.db import Base, TenantOwned, utcnow

EVENT_KINDS = (
    "digest_delivered",
    "digest_clicked",
    "article_read",
    "pulse_answered",
    "program_enrolled",
    "session_attended",
    "program_completed",
)


class AnalyticsKey(TenantOwned, Base):
    """The organisation's HMAC key for pseudonyms (one per organisation). Rotation replaces
    ``key`` and bumps ``version``: the old key is not kept anywhere."""

    __tablename__ = "analytics_keys"
    __table_args__ = (UniqueConstraint("org_id", name="uq_analytics_keys_org_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[bytes] = mapped_column(LargeBinary(64))
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    rotated_at: Mapped[datetime | None]


class ActivityEvent(TenantOwned, Base):
    """One thing an employee who consented to analytics did, stored pseudonymously with
    the group attributes they had when it happened: department, team and ``manager`` (the
    direct manager's pseudonym; the chain above it is in ``activity_lines``)."""

    __tablename__ = "activity_events"
    __table_args__ = (
        UniqueConstraint("org_id", "event_id", name="uq_activity_events_org_id_event_id"),
        Index("ix_activity_events_org_id_iso_week", "org_id", "iso_week"),
        Index("ix_activity_events_org_id_pseudonym", "org_id", "pseudonym"),
        Index("ix_activity_events_org_id_occurred_at", "org_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(24))
    occurred_at: Mapped[datetime]
    iso_week: Mapped[str] = mapped_column(String(8))
    pseudonym: Mapped[str] = mapped_column(String(64))
    department: Mapped[str] = mapped_column(String(100), default="", server_default="")
    team: Mapped[str] = mapped_column(String(100), default="", server_default="")
    manager: Mapped[str] = mapped_column(String(64), default="", server_default="")
    score: Mapped[int | None]
    article_id: Mapped[int | None]
    program_id: Mapped[int | None]
    topic: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class ActivityLine(TenantOwned, Base):
    """The reporting-line tree of a week, as recorded with that week's events: manager
    ``line`` (a pseudonym) reports to ``parent_line`` (None at the top)."""

    __tablename__ = "activity_lines"
    __table_args__ = (
        UniqueConstraint("org_id", "iso_week", "line", name="uq_activity_lines_org_id_iso_week_line"),
        Index("ix_activity_lines_org_id_week_no", "org_id", "week_no"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    iso_week: Mapped[str] = mapped_column(String(8))
    week_no: Mapped[int] = mapped_column(Integer)
    line: Mapped[str] = mapped_column(String(64))
    parent_line: Mapped[str | None] = mapped_column(String(64))


class ReportSettings(TenantOwned, Base):
    __tablename__ = "report_settings"
    __table_args__ = (UniqueConstraint("org_id", name="uq_report_settings_org_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    activity_retention_months: Mapped[int] = mapped_column(Integer, default=13, server_default="13")
    dp_enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    dp_mechanism: Mapped[str] = mapped_column(String(10), default="laplace", server_default="laplace")
    epsilon_per_period: Mapped[float] = mapped_column(Float, default=1.0, server_default="1.0")
    epsilon_per_value: Mapped[float] = mapped_column(Float, default=0.1, server_default="0.1")
    # period -> [epsilon spent, delta spent]
    budget_spent: Mapped[dict] = mapped_column(JSON, default=dict)
    last_built_at: Mapped[datetime | None]


class ReportDirtyWeek(TenantOwned, Base):
    """A week whose events changed since its report cells were built."""

    __tablename__ = "report_dirty_weeks"
    __table_args__ = (UniqueConstraint("org_id", "iso_week", name="uq_report_dirty_weeks_org_id_iso_week"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    iso_week: Mapped[str] = mapped_column(String(8))
    marked_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class BuiltByReports(TenantOwned):
    """A table only the report build writes, rebuilt from the events and summaries of the
    weeks it touches: no foreign key to ``organisations`` (the build writes a million rows
    at a time, and a per-row key check cost a third of writing them) and only the indexes
    the read path and erasure use. The product never deletes an organisation."""

    @declared_attr
    def org_id(cls) -> Mapped[int]:  # noqa: N805
        return mapped_column(Integer, nullable=False)


class ReportCell(BuiltByReports, Base):
    """Measures of one group over one period (a week, or 4 / 12 weeks ending with it)."""

    __tablename__ = "report_cells"
    __table_args__ = (
        UniqueConstraint("org_id", "window", "iso_week", "group_kind", "group_key", name="uq_report_cells_org_id_window"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    window: Mapped[int] = mapped_column(Integer)  # 1, 4 or 12 weeks ending with iso_week
    iso_week: Mapped[str] = mapped_column(String(8))
    group_kind: Mapped[str] = mapped_column(String(12))  # org, department, team, line
    group_key: Mapped[str] = mapped_column(String(201))
    parent_key: Mapped[str | None] = mapped_column(String(201))
    headcount: Mapped[int] = mapped_column(Integer, default=0)
    participants: Mapped[int] = mapped_column(Integer, default=0)
    delivered: Mapped[int] = mapped_column(Integer, default=0)
    clicked: Mapped[int] = mapped_column(Integer, default=0)
    respondents: Mapped[int] = mapped_column(Integer, default=0)
    pulse_sum: Mapped[int] = mapped_column(Integer, default=0)
    pulse_answers: Mapped[int] = mapped_column(Integer, default=0)
    readers: Mapped[int] = mapped_column(Integer, default=0)
    enrolments: Mapped[int] = mapped_column(Integer, default=0)
    attendances: Mapped[int] = mapped_column(Integer, default=0)
    completions: Mapped[int] = mapped_column(Integer, default=0)
    built_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class ReportPersonWeek(BuiltByReports, Base):
    """One person's activity in one ISO week under one set of group attributes, summed from
    the raw events in one pass (a person who changed team mid-week has two rows). Report
    cells of every group and window are built from these rows, and the anonymity engine
    derives a cell's member sets from them. Read only by the report builder and engine."""

    __tablename__ = "report_person_weeks"
    __table_args__ = (
        Index("ix_report_person_weeks_org_id_week_no", "org_id", "week_no"),
        # erasure finds a person's rows by pseudonym; a hash index on PostgreSQL costs less
        # than half a b-tree's upkeep per row written
        Index("ix_report_person_weeks_pseudonym", "pseudonym", postgresql_using="hash"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    iso_week: Mapped[str] = mapped_column(String(8))
    week_no: Mapped[int] = mapped_column(Integer)  # weeks since 1970-01-05, for window ranges
    pseudonym: Mapped[str] = mapped_column(String(64))
    department: Mapped[str] = mapped_column(String(100))
    team: Mapped[str] = mapped_column(String(100))
    manager: Mapped[str] = mapped_column(String(64))
    delivered: Mapped[int] = mapped_column(Integer)
    clicked: Mapped[int] = mapped_column(Integer)
    reads: Mapped[int] = mapped_column(Integer)
    pulse_answers: Mapped[int] = mapped_column(Integer)
    pulse_sum: Mapped[int] = mapped_column(Integer)
    score_1: Mapped[int] = mapped_column(Integer)
    score_2: Mapped[int] = mapped_column(Integer)
    score_3: Mapped[int] = mapped_column(Integer)
    score_4: Mapped[int] = mapped_column(Integer)
    score_5: Mapped[int] = mapped_column(Integer)
    enrolments: Mapped[int] = mapped_column(Integer)
    attendances: Mapped[int] = mapped_column(Integer)
    completions: Mapped[int] = mapped_column(Integer)
    topics: Mapped[str | None] = mapped_column(Text)  # JSON list of the topics read


class ReportHeadcount(BuiltByReports, Base):
    """Active employees of a group in a week (the headcount of every window ending with it)."""

    __tablename__ = "report_headcounts"
    __table_args__ = (
        UniqueConstraint("org_id", "iso_week", "group_kind", "group_key", name="uq_report_headcounts_org_id_iso_week"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    iso_week: Mapped[str] = mapped_column(String(8))
    group_kind: Mapped[str] = mapped_column(String(12))
    group_key: Mapped[str] = mapped_column(String(201))
    headcount: Mapped[int] = mapped_column(Integer)


class ReleaseLog(TenantOwned, Base):
    """A member set already shown to someone in the organisation (server-side only)."""

    __tablename__ = "report_release_log"
    __table_args__ = (
        UniqueConstraint("org_id", "period", "group_id", "set_hash", name="uq_report_release_log_org_id_period"),
        Index("ix_report_release_log_org_id_released_at", "org_id", "released_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    period: Mapped[str] = mapped_column(String(40))
    group_id: Mapped[str] = mapped_column(String(260))
    set_hash: Mapped[str] = mapped_column(String(64))
    members: Mapped[list] = mapped_column(JSON)
    released_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


__all__ = [
    "EVENT_KINDS", "ActivityEvent", "ActivityLine", "AnalyticsKey", "ReleaseLog", "ReportCell", "ReportDirtyWeek",
    "ReportHeadcount", "ReportPersonWeek", "ReportSettings",
]
