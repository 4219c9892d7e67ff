"""Domain errors: raised by business functions, turned into problem+json by the API
and into flash messages by the console. They carry no HTTP knowledge beyond a kind."""
from __future__ import annotations


class DomainError(Exception):
    status = 400
    title = "Bad request"

    def __init__(self, detail: str, *, errors: dict | None = None):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or {}


class NotFound(DomainError):
    status = 404
    title = "Not found"


class Forbidden(DomainError):
    status = 403
    title = "Forbidden"


class Conflict(DomainError):
    status = 409
    title = "Conflict"


class InvalidInput(DomainError):
    """Input that is well-formed but breaks a business rule; ``errors`` maps field -> messages."""

    status = 422
    title = "Unprocessable content"


class PreconditionFailed(DomainError):
    """An If-Match names a version that is no longer current."""

    status = 412
    title = "Precondition failed"


class PreconditionRequired(DomainError):
    """An update came without If-Match, so it could overwrite a concurrent edit."""

    status = 428
    title = "Precondition required"


class PayloadTooLarge(DomainError):
    status = 413
    title = "Content too large"


class UnsupportedMediaType(DomainError):
    status = 415
    title = "Unsupported media type"
