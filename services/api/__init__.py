"""The REST API under /api/v1: flask-smorest with problem+json errors and bearer auth."""
from __future__ import annotations

import logging

from flask import Flask, request
from flask_limiter.errors import RateLimitExceeded
from flask_smorest import Api
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import BadRequest, HTTPException, InternalServerError, default_exceptions

from services import auth, context
from services.api.problems import ProblemSchema, flatten_errors, problem
from shared.errors import DomainError

API_PREFIX = "/api/v1"
BODY_MIMETYPES = ("application/json", "multipart/form-data", "text/csv")
log = logging.getLogger(__name__)


def is_api_request() -> bool:
    return request.path == API_PREFIX or request.path.startswith(API_PREFIX + "/")


class WellbeingApi(Api):
    """flask-smorest's Api, answering errors as RFC 9457 problem details."""

    ERROR_SCHEMA = ProblemSchema

    def handle_http_exception(self, error: HTTPException):
        if not is_api_request():
            return error
        data = getattr(error, "data", None) or {}
        errors = data.get("errors") or data.get("messages")
        detail = data.get("message") or error.description
        if errors:
            detail = "The request has invalid fields; see errors."
        return problem(error.code or 500, detail, errors=flatten_errors(errors) if errors else None, headers=data.get("headers"))


def _on_domain_error(error: DomainError):
    if not is_api_request():
        return default_exceptions.get(error.status, BadRequest)(error.detail)
    return problem(error.status, error.detail, errors=flatten_errors(error.errors) if error.errors else None, title=error.title)


def _on_integrity_error(error: IntegrityError):
    log.info("integrity error answered 409: %s", error.orig)
    if not is_api_request():
        raise error
    return problem(409, "The change conflicts with existing data (a unique value is already taken or a referenced record is missing).")


def _on_rate_limited(error: RateLimitExceeded):
    retry_after = str(int(error.retry_after or 60)) if hasattr(error, "retry_after") else "60"
    if not is_api_request():
        return error
    return problem(429, f"Too many attempts: {error.description}. Try again later.", headers={"Retry-After": retry_after})


def _on_unexpected(error: Exception):
    if isinstance(error, HTTPException):
        raise error
    log.exception("unhandled error")
    if not is_api_request():
        return InternalServerError()
    return problem(500, "An unexpected error occurred; it has been logged with the request id.")


def _authenticate_api_request():
    if not is_api_request():
        return None
    if request.method in ("POST", "PUT", "PATCH") and (request.content_length or request.headers.get("Transfer-Encoding")):
        if request.mimetype not in BODY_MIMETYPES:
            return problem(415, f"Send the body as one of: {', '.join(BODY_MIMETYPES)}.")
    is_public, roles = auth.access_policy()
    if is_public:
        return None
    if not auth.authenticate_bearer():
        return problem(401, "A valid bearer token is required.", headers={"WWW-Authenticate": 'Bearer realm="wellbeing"'})
    if context.current_user().role not in roles:
        return problem(403, "Your role may not use this endpoint.")
    return None


def init_api(app: Flask) -> WellbeingApi:
    app.config.update(
        API_TITLE="Wellbeing platform API",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX=API_PREFIX,
        OPENAPI_JSON_PATH="openapi.json",
    )
    api = WellbeingApi(
        app,
        spec_kwargs={
            "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
            "security": [{"bearerAuth": []}],
        },
    )
    app.before_request(_authenticate_api_request)
    app.register_error_handler(DomainError, _on_domain_error)
    app.register_error_handler(IntegrityError, _on_integrity_error)
    app.register_error_handler(RateLimitExceeded, _on_rate_limited)
    app.register_error_handler(Exception, _on_unexpected)

    from services.api import articles, auth_tokens, docs, organisation, users
    from services.api import employees, programs
    from services.api import digests
    from services.api import reports

    from services.extensions import csrf

    for module in (auth_tokens, users, organisation, articles, employees, programs, digests, reports):
        api.register_blueprint(module.blp, url_prefix=f"{API_PREFIX}{module.URL_PREFIX}")
        # Bearer tokens are not sent by browsers on their own: no CSRF to defend against.
        csrf.exempt(module.blp)
    app.register_blueprint(docs.bp, url_prefix=API_PREFIX)
    return api
