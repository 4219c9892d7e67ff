"""Per-request access to settings, the database session and the signed-in user."""
from __future__ import annotations

from flask import current_app, g
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.db import Database
from shared.models import User


def settings() -> Settings:
    return current_app.extensions["wellbeing.settings"]


def database() -> Database:
    return current_app.extensions["wellbeing.db"]


def get_session() -> Session:
    """The request's session, bound to the signed-in user's organisation (or to none)."""
    if "db_session" not in g:
        user_org = g.get("user_org_id")
        g.db_session = database().open(user_org)
    return g.db_session


def bind_user(user_id: int, org_id: int) -> User | None:
    """Make ``user_id`` of ``org_id`` the request's user and scope the session to that organisation."""
    if "db_session" in g:
        g.db_session.close()
        g.pop("db_session")
    g.user_org_id = org_id
    user = get_session().get(User, user_id)
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
