"""Organisations (tenants), their console users, API tokens and the audit trail."""
from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, Boolean, CheckConstraint, Enum, ForeignKey, Index, Integer, String, func
from sqlalchemy.orm import Mapped, mapped_column, relationship

from shared.db import Base, TenantOwned, utcnow


class Role(str, enum.Enum):
    HR_ADMIN = "hr_admin"
    MANAGER = "manager"


class Organisation(Base):
    __tablename__ = "organisations"
    __table_args__ = (CheckConstraint("anonymity_k >= 3", name="anonymity_k_min"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    # Smallest group a report cell may describe (SPEC: default 5, never below 3).
    anonymity_k: Mapped[int] = mapped_column(Integer, default=5, server_default="5")
    brand_colour: Mapped[str] = mapped_column(String(7), default="#2f6f4f", server_default="#2f6f4f")
    default_timezone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")
    default_locale: Mapped[str] = mapped_column(String(16), default="en-GB", server_default="en-GB")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class User(TenantOwned, Base):
    """A console user: an HR admin or a manager. Employees never have one."""

    __tablename__ = "users"
    # The user list pages in email order within one organisation: the index hands
    # out a page without sorting the whole organisation.
    __table_args__ = (Index("ix_users_org_id_email", "org_id", "email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # Stored lower-case; one login per address across the platform.
    email: Mapped[str] = mapped_column(String(254), unique=True)
    full_name: Mapped[str] = mapped_column(String(200), default="", server_default="")
    role: Mapped[Role] = mapped_column(Enum(Role, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e]))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    # Bumped on deactivation or password change: invalidates every console session.
    session_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    last_login_at: Mapped[datetime | None]

    # Loaded on use: joining it into every user query (token look-ups, list pages)
    # costs each of them a join for a row that is rarely read.
    organisation: Mapped[Organisation] = relationship()


class ApiToken(TenantOwned, Base):
    """A bearer token; only its SHA-256 is stored, so a database leak reveals no token."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]

    user: Mapped[User] = relationship()


class AuditEvent(TenantOwned, Base):
    """Who did what to whom; holds ids and field names, never the personal data itself."""

    __tablename__ = "audit_events"
    # The one read is a subject's history (the employee page); the CSV import writes one
    # row per employee, so every index is paid per row (migration 0009_audit_target).
    __table_args__ = (Index("ix_audit_events_org_id_target_type_target_id", "org_id", "target_type", "target_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # No index of its own: the subject index leads with it.
    org_id: Mapped[int] = mapped_column(Integer, ForeignKey("organisations.id", ondelete="CASCADE"), nullable=False)
    at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    actor_label: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(80))
    target_type: Mapped[str] = mapped_column(String(40))
    target_id: Mapped[int | None]
    details: Mapped[dict] = mapped_column(JSON, default=dict)
