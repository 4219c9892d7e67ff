"""Conventions every resource follows: pagination in, page envelopes out."""
from __future__ import annotations

from collections.abc import Mapping
from functools import cache

import marshmallow as ma
from marshmallow import fields, validate

MAX_PER_PAGE = 100
# Ids are 32-bit integer columns: anything larger names no record.
MAX_ID = 2**31 - 1


class Id(fields.Integer):
    """A record id given by a client: 1..MAX_ID, so a huge number is a 422 rather than
    an overflow in the database driver."""

    def __init__(self, **kwargs):  # noqa: ANN003
        super().__init__(**kwargs)
        self.validators.insert(0, validate.Range(min=1, max=MAX_ID))


def _is_storable(value: object) -> bool:
    """False for text no database column can hold: a NUL character (PostgreSQL refuses
    it) or an unpaired surrogate (not encodable as UTF-8), anywhere inside ``value``."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item or not item.isascii() and not _encodes(item):
                return False
        elif isinstance(item, Mapping):
            stack.extend(item[key] for key in item)
            stack.extend(item)
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return True


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class StrictSchema(ma.Schema):
    """Unknown fields are errors, so a typo in a request never passes silently; text
    that cannot be stored is an error too, not a database failure."""

    class Meta:
        unknown = ma.RAISE

    @ma.pre_load
    def _refuse_unstorable_text(self, data, **_kwargs):  # noqa: ANN001
        if isinstance(data, Mapping):
            bad = [key for key in data if not _is_storable(key) or not _is_storable(data[key])]
            if bad:
                raise ma.ValidationError({str(key).replace("\x00", "?"): ["Contains a NUL character or invalid Unicode."] for key in bad})
        return data


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
            # Nested(many=True) dumps the page in one call; List(Nested) would dump each
            # item on its own, at several times the cost per item. Same OpenAPI document.
            "items": fields.Nested(item_schema, many=True, required=True),
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
