"""The REST API under /api/v1: flask-smorest with problem+json errors and bearer auth."""
from __future__ import annotations

import logging
import re
from http import HTTPStatus

from flask import Flask, current_app, request
from flask_limiter.errors import RateLimitExceeded
from flask_smorest import Api
from flask_smorest.utils import prepare_response
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import BadRequest, HTTPException, InternalServerError, RequestEntityTooLarge, default_exceptions

from services import auth, context
from services.api.problems import PROBLEM_MIMETYPE, ProblemSchema, flatten_errors, problem
from shared.errors import DomainError

API_PREFIX = "/api/v1"
BODY_MIMETYPES = ("application/json", "multipart/form-data", "text/csv")
log = logging.getLogger(__name__)


def is_api_request() -> bool:
    return request.path == API_PREFIX or request.path.startswith(API_PREFIX + "/")


class WellbeingApi(Api):
    """flask-smorest's Api, answering errors as RFC 9457 problem details."""

    ERROR_SCHEMA = ProblemSchema
    # Each operation lists the errors it can answer (document_errors), not a catch-all.
    DEFAULT_ERROR_RESPONSE_NAME = None

    def _register_responses(self):
        """The status-code responses views refer to, served as problem+json."""
        for status in HTTPStatus:
            response = {"description": status.phrase}
            if status >= 400:
                response["schema"] = self.ERROR_SCHEMA
            prepare_response(response, self.spec, PROBLEM_MIMETYPE)
            self.spec.components.response(status.name, response, lazy=True)

    def document_errors(self, app: Flask) -> None:
        """Add to every operation the errors the request pipeline itself answers:
        401/403 (authentication and roles), 404 (an unknown or foreign id in the path),
        400/413/415/422 (the body) and 409 (a write that breaks a unique or foreign key)."""
        with app.app_context():
            for rule in app.url_map.iter_rules():
                path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
                for method, operation in self.spec._paths.get(path, {}).items():
                    if method.upper() not in rule.methods:
                        continue
                    is_public, _roles = auth.access_policy(rule.endpoint, method.upper())
                    codes = set()
                    if not is_public:
                        codes |= {401, 403}
                    if rule.arguments:
                        codes.add(404)
                    if "requestBody" in operation:
                        codes |= {400, 413, 415, 422}
                    if method.upper() in ("POST", "PUT", "PATCH", "DELETE") and not is_public:
                        codes.add(409)
                    responses = operation.setdefault("responses", {})
                    for code in sorted(codes):
                        responses.setdefault(str(code), self.spec.components.get_ref("response", HTTPStatus(code).name))

    def handle_http_exception(self, error: HTTPException):
        if not is_api_request():
            return error
        data = getattr(error, "data", None) or {}
        errors = data.get("errors") or data.get("messages")
        detail = data.get("message") or error.description
        if errors:
            detail = "The request has invalid fields; see errors."
        if isinstance(error, RequestEntityTooLarge):
            limit_mb = context.settings().max_request_bytes // (1024 * 1024)
            detail = f"The request body is larger than the {limit_mb} MB limit (MAX_REQUEST_MB)."
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


def _check_json_body():
    """Decode a JSON body first with the app's depth-limited decoder, so a body nested
    too deeply (or not JSON at all) is a 400 saying why, before a schema parser recurses into it."""
    if not is_api_request() or not request.is_json or not request.content_length:
        return None
    try:
        current_app.json.loads(request.get_data(cache=True))
    except ValueError as error:
        return problem(400, f"The body is not acceptable JSON: {error}.")
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
    app.before_request(_check_json_body)
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
    api.document_errors(app)
    return api
