"""Employees (from the HRIS), their consents, wellbeing programs, enrolments and CSV import jobs."""
from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, deferred, mapped_column

from shared.db import Base, TenantOwned, utcnow


def _enum(cls: type[enum.Enum], length: int = 20) -> Enum:
    return Enum(cls, native_enum=False, length=length, values_callable=lambda e: [m.value for m in e])


class EmployeeStatus(str, enum.Enum):
    ACTIVE = "active"
    LEFT = "left"


class ConsentKind(str, enum.Enum):
    DIGEST_EMAILS = "digest_emails"
    ACTIVITY_ANALYTICS = "activity_analytics"


class ConsentSource(str, enum.Enum):
    IMPORT = "import"
    ADMIN = "admin"
    EMPLOYEE_LINK = "employee_link"


class ProgramStatus(str, enum.Enum):
    DRAFT = "draft"
    OPEN = "open"
    CLOSED = "closed"
    ARCHIVED = "archived"


class EnrolmentStatus(str, enum.Enum):
    ENROLLED = "enrolled"
    WAITLISTED = "waitlisted"
    WITHDRAWN = "withdrawn"


class ImportMode(str, enum.Enum):
    DRY_RUN = "dry_run"
    ATOMIC = "atomic"
    PARTIAL = "partial"


class ImportStatus(str, enum.Enum):
    QUEUED = "queued"
    VALIDATING = "validating"
    APPLYING = "applying"
    DONE = "done"
    FAILED = "failed"


class Employee(TenantOwned, Base):
    """An employee of the organisation. Employees never log in; they act through signed links."""

    __tablename__ = "employees"
    __table_args__ = (
        UniqueConstraint("org_id", "email", name="uq_employees_org_id_email"),
        UniqueConstraint("org_id", "external_id", name="uq_employees_org_id_external_id"),
        Index("ix_employees_org_id_status", "org_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # No index of its own: the unique (org_id, email) and (org_id, external_id) and the
    # (org_id, status) indexes all lead with it (migration 0007_import).
    org_id: Mapped[int] = mapped_column(Integer, ForeignKey("organisations.id", ondelete="CASCADE"), nullable=False)
    external_id: Mapped[str] = mapped_column(String(64))
    # Stored lower-case, so uniqueness is case-insensitive on every backend.
    email: Mapped[str] = mapped_column(String(254))
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    department: Mapped[str] = mapped_column(String(100), default="", server_default="")
    team: Mapped[str] = mapped_column(String(100), default="", server_default="")
    # The HRIS link is authoritative; manager_id is kept in step with it by the domain.
    manager_external_id: Mapped[str | None] = mapped_column(String(64))
    manager_id: Mapped[int | None] = mapped_column(ForeignKey("employees.id", ondelete="SET NULL"), index=True)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")
    locale: Mapped[str] = mapped_column(String(16), default="", server_default="")
    status: Mapped[EmployeeStatus] = mapped_column(_enum(EmployeeStatus, 10), default=EmployeeStatus.ACTIVE, server_default="active")
    left_at: Mapped[datetime | None]
    # Current consent, denormalised from the consent records for fast digest/analytics queries.
    digest_consent: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    analytics_consent: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    digest_weekday: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    digest_hour: Mapped[int] = mapped_column(Integer, default=9, server_default="9")
    digest_topics: Mapped[list] = mapped_column(JSON, default=list)
    paused_until: Mapped[date | None] = mapped_column(Date)
    # Bumped to revoke every signed link handed to this employee.
    link_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


class Consent(TenantOwned, Base):
    """One grant or withdrawal of consent: who, when, how."""

    __tablename__ = "employee_consents"

    id: Mapped[int] = mapped_column(primary_key=True)
    employee_id: Mapped[int] = mapped_column(ForeignKey("employees.id", ondelete="CASCADE"), index=True)
    kind: Mapped[ConsentKind] = mapped_column(_enum(ConsentKind, 30))
    granted: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[ConsentSource] = mapped_column(_enum(ConsentSource, 20))
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class Program(TenantOwned, Base):
    __tablename__ = "programs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    topics: Mapped[list] = mapped_column(JSON, default=list)
    starts_on: Mapped[date | None] = mapped_column(Date)
    ends_on: Mapped[date | None] = mapped_column(Date)
    capacity: Mapped[int | None]
    status: Mapped[ProgramStatus] = mapped_column(_enum(ProgramStatus, 10), default=ProgramStatus.DRAFT, server_default="draft")
    # Bumped by every enrolment change: the row lock that serialises them.
    lock_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class Enrolment(TenantOwned, Base):
    """Current state of one employee in one program (history in EnrolmentEvent)."""

    __tablename__ = "enrolments"
    __table_args__ = (UniqueConstraint("program_id", "employee_id", name="uq_enrolments_program_id_employee_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"), index=True)
    employee_id: Mapped[int] = mapped_column(ForeignKey("employees.id", ondelete="CASCADE"), index=True)
    status: Mapped[EnrolmentStatus] = mapped_column(_enum(EnrolmentStatus, 12))
    # Position in the waitlist (smaller first); set when the employee joins it.
    waitlist_seq: Mapped[int | None]
    source: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class EnrolmentEvent(TenantOwned, Base):
    __tablename__ = "enrolment_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"), index=True)
    employee_id: Mapped[int] = mapped_column(ForeignKey("employees.id", ondelete="CASCADE"), index=True)
    action: Mapped[str] = mapped_column(String(20))  # enrolled, waitlisted, promoted, withdrawn
    source: Mapped[str] = mapped_column(String(20))  # admin, employee_link, system
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class ImportJob(TenantOwned, Base):
    """A CSV import: its options, progress and (capped) error list. The uploaded file lives
    in ImportChunk rows until the job finishes, so API and worker may run on different machines."""

    __tablename__ = "employee_import_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[ImportStatus] = mapped_column(_enum(ImportStatus, 12), default=ImportStatus.QUEUED)
    mode: Mapped[ImportMode] = mapped_column(_enum(ImportMode, 10))
    mark_missing_as_left: Mapped[bool] = mapped_column(Boolean, default=False)
    filename: Mapped[str] = mapped_column(String(255), default="")
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    rows_total: Mapped[int | None]
    rows_done: Mapped[int] = mapped_column(Integer, default=0)
    created_count: Mapped[int] = mapped_column(Integer, default=0)
    updated_count: Mapped[int] = mapped_column(Integer, default=0)
    unchanged_count: Mapped[int] = mapped_column(Integer, default=0)
    left_count: Mapped[int] = mapped_column(Integer, default=0)
    error_count: Mapped[int] = mapped_column(Integer, default=0)
    error_rows: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[list] = mapped_column(JSON, default=list)
    applied: Mapped[bool] = mapped_column(Boolean, default=False)
    failure: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class ImportChunk(TenantOwned, Base):
    __tablename__ = "employee_import_chunks"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("employee_import_jobs.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int]
    data: Mapped[bytes] = deferred(mapped_column(LargeBinary))
