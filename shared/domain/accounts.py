"""Organisations, console users and API tokens."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from shared import security
from shared.db import across_tenants, utcnow
from shared.domain import audit
from shared.errors import Conflict, Forbidden, InvalidInput, NotFound
from shared.models import ApiToken, Organisation, Role, User
from shared.pagination import list_query

INVITE_MAX_AGE_SECONDS = 7 * 24 * 3600
TOKEN_USE_RESOLUTION = timedelta(minutes=1)


def normalise_email(email: str) -> str:
    return email.strip().lower()


def check_password_strength(password: str) -> None:
    if len(password) < security.MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            "Password too short",
            errors={"password": [f"Use at least {security.MIN_PASSWORD_LENGTH} characters."]},
        )


def _slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:60] or "org"


def _email_taken(session: Session, email: str) -> bool:
    # Emails are unique across the platform, so this look-up must see every tenant.
    with across_tenants(session):
        return session.scalar(select(func.count()).select_from(User).where(User.email == email)) > 0


def create_organisation(session: Session, name: str, admin_email: str, admin_password: str) -> Organisation:
    """Platform operation: a new tenant with its first HR admin. Needs an unscoped session."""
    name = name.strip()
    if not name:
        raise InvalidInput("Name required", errors={"name": ["Must not be empty."]})
    email = normalise_email(admin_email)
    check_password_strength(admin_password)
    if _email_taken(session, email):
        raise Conflict(f"A user with email {email} already exists", errors={"admin_email": ["Already registered."]})
    base = _slugify(name)
    slug, n = base, 1
    while session.scalar(select(Organisation.id).where(Organisation.slug == slug)) is not None:
        n += 1
        slug = f"{base}-{n}"
    org = Organisation(name=name, slug=slug)
    session.add(org)
    session.flush()
    admin = User(org_id=org.id, email=email, role=Role.HR_ADMIN, password_hash=security.hash_password(admin_password))
    session.add(admin)
    session.flush()
    audit.record(session, None, "organisation.created", "organisation", org.id, org_id=org.id)
    return org


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The active user with these credentials, or None. Needs an unscoped session."""
    user = session.scalar(select(User).where(User.email == normalise_email(email)))
    if not security.verify_password(user.password_hash if user else None, password):
        return None
    if user is None or not user.is_active:
        return None
    if security.password_needs_rehash(user.password_hash):
        user.password_hash = security.hash_password(password)
    user.last_login_at = utcnow()
    return user


@dataclass(frozen=True)
class IssuedToken:
    token: str
    record: ApiToken


def issue_token(session: Session, user: User, ttl: timedelta) -> IssuedToken:
    raw = security.new_token()
    record = ApiToken(org_id=user.org_id, user_id=user.id, token_hash=security.token_digest(raw), expires_at=utcnow() + ttl)
    session.add(record)
    session.flush()
    return IssuedToken(raw, record)


# Built once: constructing the statement cost more than running it. The token's own
# columns come as plain values, not as an ApiToken object: only its id and last use
# are read, and loading a second object per request costs more than the query.
_LIVE_TOKEN = (
    select(User, ApiToken.id, ApiToken.last_used_at)
    .join(ApiToken, ApiToken.user_id == User.id)
    .where(
        ApiToken.token_hash == bindparam("token_hash"),
        ApiToken.revoked_at.is_(None),
        ApiToken.expires_at > bindparam("now", type_=ApiToken.expires_at.type),
        User.is_active.is_(True),
    )
)
_RECORD_TOKEN_USE = (
    update(ApiToken)
    .where(ApiToken.id == bindparam("token_id"))
    .values(last_used_at=bindparam("now", type_=ApiToken.last_used_at.type))
    .execution_options(synchronize_session=False)
)


def resolve_token(session: Session, raw: str, now: datetime | None = None) -> User | None:
    """The user of the live token for this bearer string, or None. Needs an unscoped
    session. One query on every API request: revocation, expiry and the user's
    deactivation are checked in it, so each takes effect on the next request."""
    now = now or utcnow()
    row = session.execute(_LIVE_TOKEN, {"token_hash": security.token_digest(raw), "now": now}).first()
    if row is None:
        return None
    user, token_id, last_used_at = row
    # Recorded to the minute: a write on every request would serialise all API reads.
    if last_used_at is None or now - last_used_at > TOKEN_USE_RESOLUTION:
        session.execute(_RECORD_TOKEN_USE, {"token_id": token_id, "now": now})
    return user


def revoke_token(session: Session, actor: User, token_id: int) -> ApiToken:
    """Users revoke their own tokens; HR admins revoke anyone's in their organisation."""
    record = session.get(ApiToken, token_id)
    if record is None:
        raise NotFound(f"Token {token_id} not found")
    if record.user_id != actor.id and actor.role != Role.HR_ADMIN:
        raise Forbidden("Only HR admins may revoke other users' tokens")
    if record.revoked_at is None:
        record.revoked_at = utcnow()
        audit.record(session, actor, "token.revoked", "user", record.user_id, {"token_id": record.id})
    return record


def revoke_token_value(session: Session, actor: User, raw: str) -> None:
    record = session.scalar(select(ApiToken).where(ApiToken.token_hash == security.token_digest(raw)))
    if record is not None:
        revoke_token(session, actor, record.id)


def list_tokens(session: Session, actor: User):
    return _tokens_query(None if actor.role == Role.HR_ADMIN else actor.id)


@list_query
def _tokens_query(user_id: int | None):
    stmt = select(ApiToken).order_by(ApiToken.id.desc())
    if user_id is not None:
        stmt = stmt.where(ApiToken.user_id == user_id)
    return stmt


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"User {user_id} not found")
    return user


@list_query
def users_query(role: Role | None = None, is_active: bool | None = None, q: str | None = None):
    stmt = select(User).order_by(User.email)
    if role is not None:
        stmt = stmt.where(User.role == role)
    if is_active is not None:
        stmt = stmt.where(User.is_active == is_active)
    if q:
        like = f"%{q.lower()}%"
        stmt = stmt.where(func.lower(User.email).like(like) | func.lower(User.full_name).like(like))
    return stmt


@dataclass(frozen=True)
class Invitation:
    user: User
    token: str


def invitation_signer(secret_key: str) -> security.LinkSigner:
    return security.LinkSigner(secret_key, "invite")


def invite_user(session: Session, actor: User, secret_key: str, email: str, role: Role, full_name: str = "") -> Invitation:
    email = normalise_email(email)
    if _email_taken(session, email):
        raise Conflict(f"A user with email {email} already exists", errors={"email": ["Already registered."]})
    user = User(org_id=actor.org_id, email=email, role=role, full_name=full_name.strip(), password_hash=None)
    session.add(user)
    session.flush()
    audit.record(session, actor, "user.invited", "user", user.id, {"role": role.value})
    token = invitation_signer(secret_key).sign({"user_id": user.id, "epoch": user.session_epoch})
    return Invitation(user, token)


def accept_invitation(session: Session, secret_key: str, token: str, password: str) -> User:
    """Set the password of an invited user. Needs an unscoped session (the invitee has no login yet)."""
    payload = invitation_signer(secret_key).verify(token, INVITE_MAX_AGE_SECONDS)
    user = session.get(User, payload["user_id"]) if isinstance(payload, dict) else None
    if user is None or user.password_hash is not None or not user.is_active or payload.get("epoch") != user.session_epoch:
        raise InvalidInput("This invitation link is invalid, used or expired", errors={"token": ["Invalid or expired."]})
    check_password_strength(password)
    user.password_hash = security.hash_password(password)
    audit.record(session, None, "user.invitation_accepted", "user", user.id, org_id=user.org_id)
    return user


def set_user_active(session: Session, actor: User, user_id: int, active: bool) -> User:
    user = get_user(session, user_id)
    if user.id == actor.id and not active:
        raise Conflict("You cannot deactivate your own account", errors={"is_active": ["Cannot deactivate yourself."]})
    if user.is_active != active:
        user.is_active = active
        user.session_epoch += 1
        if not active:
            now = utcnow()
            for token in session.scalars(select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))):
                token.revoked_at = now
        audit.record(session, actor, "user.activated" if active else "user.deactivated", "user", user.id)
    return user


def get_organisation(session: Session, org_id: int) -> Organisation:
    org = session.get(Organisation, org_id)
    if org is None:
        raise NotFound(f"Organisation {org_id} not found")
    return org


def update_organisation(session: Session, actor: User, changes: dict) -> Organisation:
    org = get_organisation(session, actor.org_id)
    if "anonymity_k" in changes and changes["anonymity_k"] < 3:
        raise InvalidInput("k too small", errors={"anonymity_k": ["Must be at least 3."]})
    changed = sorted(k for k, v in changes.items() if getattr(org, k) != v)
    for key in changed:
        setattr(org, key, changes[key])
    if changed:
        audit.record(session, actor, "organisation.updated", "organisation", org.id, {"fields": changed})
    return org
