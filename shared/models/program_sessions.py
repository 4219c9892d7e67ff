"""Scheduled sessions of a wellbeing program (a class, a workshop, a call) and who attended."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, TenantOwned, utcnow


class ProgramSession(TenantOwned, Base):
    __tablename__ = "program_sessions"
    __table_args__ = (Index("ix_program_sessions_org_id_starts_at", "org_id", "starts_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    # Stored in UTC; shown to each employee in their own timezone.
    starts_at: Mapped[datetime]
    duration_minutes: Mapped[int] = mapped_column(Integer)
    location: Mapped[str] = mapped_column(String(200), default="", server_default="")
    join_url: Mapped[str] = mapped_column(String(500), default="", server_default="")
    # Places in the room or call; None means no limit.
    capacity: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class SessionAttendance(TenantOwned, Base):
    """An HR admin's record that an enrolled employee attended a session."""

    __tablename__ = "program_session_attendances"
    __table_args__ = (UniqueConstraint("session_id", "employee_id", name="uq_program_session_attendances_session_id_employee_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("program_sessions.id", ondelete="CASCADE"), index=True)
    employee_id: Mapped[int] = mapped_column(ForeignKey("employees.id", ondelete="CASCADE"), index=True)
    marked_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    marked_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
