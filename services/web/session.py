"""Console sign-in with flask-login. The session id embeds the user's session epoch,
so deactivating a user (or any change that bumps it) ends every console session."""
from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from flask import abort
from flask_login import UserMixin, current_user, login_required
from sqlalchemy import select

from services import context
from shared.db import across_tenants
from shared.models import Role, User


class ConsoleUser(UserMixin):
    def __init__(self, user: User):
        self.user = user
        self.role = user.role

    def get_id(self) -> str:
        return f"{self.user.id}.{self.user.session_epoch}"

    @property
    def is_active(self) -> bool:
        return self.user.is_active


def load_user_from_session(session_id: str) -> ConsoleUser | None:
    user_id, _, epoch = session_id.partition(".")
    if not user_id.isdigit() or not epoch.isdigit():
        return None
    session = context.get_session()
    with across_tenants(session):
        user = session.scalar(
            select(User).where(User.id == int(user_id), User.session_epoch == int(epoch), User.is_active.is_(True))
        )
    if user is None:
        return None
    return ConsoleUser(context.bind_user(user))


def console_roles(*roles: Role) -> Callable:
    """Sign-in required, and one of ``roles`` (HR admin only when none are given)."""
    allowed = frozenset(roles or (Role.HR_ADMIN,))

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        @login_required
        def wrapped(*args, **kwargs):
            if current_user.role not in allowed:
                abort(403)
            return view(*args, **kwargs)

        return wrapped

    return decorate
