"""Conventions every resource follows: pagination in, page envelopes out."""
from __future__ import annotations

from functools import cache

import marshmallow as ma
from marshmallow import fields, validate

MAX_PER_PAGE = 100


class StrictSchema(ma.Schema):
    """Unknown fields are errors, so a typo in a request never passes silently."""

    class Meta:
        unknown = ma.RAISE


class PageQuerySchema(StrictSchema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    per_page = fields.Integer(load_default=20, validate=validate.Range(min=1, max=MAX_PER_PAGE))


@cache
def page_of(item_schema: type[ma.Schema]) -> type[ma.Schema]:
    """The paginated-list envelope for ``item_schema`` (one class per item schema,
    so the OpenAPI document names each once)."""
    name = item_schema.__name__.removesuffix("Schema") + "PageSchema"
    return type(
        name,
        (ma.Schema,),
        {
            "items": fields.List(fields.Nested(item_schema), required=True),
            "page": fields.Integer(required=True),
            "per_page": fields.Integer(required=True),
            "total": fields.Integer(required=True),
            "pages": fields.Integer(required=True),
        },
    )


def validate_timezone(value: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ma.ValidationError("Unknown IANA timezone, e.g. Europe/London.") from None
