"""Who may call what. API views are authenticated and HR-admin-only by default:
a new view must opt *in* to anonymous access (``@public``) or to more roles
(``@allow_roles``), so forgetting a decorator fails closed."""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flask import current_app, request

from services import context
from shared.db import across_tenants
from shared.domain import accounts
from shared.models import Role

F = TypeVar("F", bound=Callable)
DEFAULT_ROLES = frozenset({Role.HR_ADMIN})


# Endpoints whose view functions are not ours to decorate (the OpenAPI document,
# the docs page's static script) and that are public.
PUBLIC_ENDPOINTS = {"api-docs.openapi_json", "api_docs.static"}


def public(func: F) -> F:
    func._wellbeing_public = True
    return func


def allow_roles(*roles: Role) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        func._wellbeing_roles = frozenset(roles)
        return func

    return decorate


def _view_method(endpoint: str, http_method: str) -> Callable | None:
    view = current_app.view_functions.get(endpoint)
    if view is None:
        return None
    view_class = getattr(view, "view_class", None)
    if view_class is not None:
        return getattr(view_class, http_method.lower(), None) or getattr(view_class, "get", None)
    return view


def access_policy(endpoint: str | None = None, http_method: str | None = None) -> tuple[bool, frozenset[Role]]:
    """(is_public, roles allowed) of an endpoint (by default the current request's)."""
    endpoint = endpoint if endpoint is not None else request.endpoint or ""
    if endpoint in PUBLIC_ENDPOINTS:
        return True, frozenset()
    method = _view_method(endpoint, http_method or request.method)
    if method is None:
        return True, frozenset()  # unrouted: let the 404/405 through
    return getattr(method, "_wellbeing_public", False), getattr(method, "_wellbeing_roles", DEFAULT_ROLES)


def login_rate_limit() -> str:
    return context.settings().login_rate_limit


def login_account_key() -> str:
    """Throttle key per account (the email in a JSON body or a form), so spreading a
    password guess across many addresses does not help."""
    body = request.get_json(silent=True) if request.is_json else request.form
    email = body.get("email") if hasattr(body, "get") else None
    return "account:" + accounts.normalise_email(email) if isinstance(email, str) else "account:?"


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate_bearer() -> bool:
    """Bind the request to the token's user; False when the token is missing or dead."""
    token = bearer_token()
    if token is None:
        return False
    # One session serves the whole request: the look-up runs on it before it is
    # scoped, which saves a connection checkout and a commit per API call.
    session = context.get_session()
    with across_tenants(session):
        user = accounts.resolve_token(session, token)
    if user is None:
        return False
    context.bind_user(user)
    return True
