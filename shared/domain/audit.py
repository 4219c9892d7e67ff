from __future__ import annotations

from sqlalchemy.orm import Session

from shared.models import AuditEvent, User


def record(
    session: Session,
    actor: User | None,
    action: str,
    target_type: str,
    target_id: int | None,
    details: dict | None = None,
    *,
    org_id: int | None = None,
) -> AuditEvent:
    """Append to the audit trail. ``details`` must hold ids and field names, not personal data."""
    event = AuditEvent(
        actor_user_id=actor.id if actor else None,
        actor_label=f"user:{actor.id}" if actor else "system",
        action=action,
        target_type=target_type,
        target_id=target_id,
        details=details or {},
    )
    if actor is not None or org_id is not None:
        event.org_id = org_id if org_id is not None else actor.org_id
    session.add(event)
    return event
