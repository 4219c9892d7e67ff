"""RFC 9457 problem details for every API error, with field-level detail."""
from __future__ import annotations

from http import HTTPStatus

import marshmallow as ma
from flask import Response, json, request

PROBLEM_MIMETYPE = "application/problem+json"


class FieldErrorSchema(ma.Schema):
    location = ma.fields.String(allow_none=True, metadata={"description": "json, query, form, files or path"})
    field = ma.fields.String(metadata={"description": "Dotted path of the field"})
    pointer = ma.fields.String(metadata={"description": "JSON pointer to the field"})
    detail = ma.fields.String()


class ProblemSchema(ma.Schema):
    """RFC 9457 problem details (served as application/problem+json)."""

    type = ma.fields.String()
    title = ma.fields.String()
    status = ma.fields.Integer()
    detail = ma.fields.String()
    instance = ma.fields.String()
    errors = ma.fields.List(ma.fields.Nested(FieldErrorSchema))


def flatten_errors(errors: dict | list | str, location: str | None = None, path: tuple = ()) -> list[dict]:
    """webargs/marshmallow's nested ``{location: {field: [msgs]}}`` -> a flat list of
    ``{"location", "field", "pointer", "detail"}``, one per message."""
    if isinstance(errors, str):
        field = ".".join(str(p) for p in path)
        return [{"location": location, "field": field, "pointer": "/" + "/".join(str(p) for p in path), "detail": errors}]
    if isinstance(errors, list):
        out: list[dict] = []
        for item in errors:
            out.extend(flatten_errors(item, location, path))
        return out
    out = []
    for key, value in errors.items():
        if location is None and key in ("json", "query", "form", "files", "headers", "path", "view_args"):
            out.extend(flatten_errors(value, key, path))
        else:
            out.extend(flatten_errors(value, location, path + (key,)))
    return out


def problem(status: int, detail: str | None = None, *, errors: list[dict] | None = None, headers: dict | None = None, title: str | None = None) -> Response:
    body: dict = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "instance": request.path,
    }
    if detail:
        body["detail"] = detail
    if errors:
        body["errors"] = errors
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_MIMETYPE)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response
