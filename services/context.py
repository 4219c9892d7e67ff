"""Per-request access to settings, the database session and the signed-in user."""
from __future__ import annotations

from flask import current_app, g, request
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.db import Database
from shared.models import User


def settings() -> Settings:
    return current_app.extensions["wellbeing.settings"]


def database() -> Database:
    return current_app.extensions["wellbeing.db"]


# Requests that by HTTP's rules should not change anything: their session begins its
# transaction at its first write (a token's last use, a report's release log), so the
# common case, reads only, saves the BEGIN and COMMIT round trips.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_session() -> Session:
    """The request's session, bound to the signed-in user's organisation (or to none)."""
    if "db_session" not in g:
        g.db_session = database().open(g.get("user_org_id"), begin_at_first_write=request.method in SAFE_METHODS)
    return g.db_session


def bind_user(user: User) -> User:
    """Make ``user`` (found by an authentication look-up on the request session)
    the request's user, and scope the request session to their organisation for
    everything that follows."""
    session = get_session()
    if session.info.get("org_id") not in (None, user.org_id):
        raise RuntimeError("request session already bound to another organisation")
    session.info["org_id"] = user.org_id
    g.user_org_id = user.org_id
    g.current_user = user
    return user


def current_user() -> User | None:
    return g.get("current_user")


def finish_request(success: bool) -> None:
    session: Session | None = g.pop("db_session", None)
    if session is None:
        return
    try:
        if success:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()
