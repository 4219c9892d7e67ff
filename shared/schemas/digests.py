"""Request and response bodies of weekly digests: settings, runs, sends, previews."""
from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from shared.domain.digest_schedule import parse_iso_week
from shared.models import SendState
from shared.schemas.common import Id, PageQuerySchema, StrictSchema


def validate_week(value: str) -> None:
    try:
        parse_iso_week(value)
    except ValueError:
        raise ma.ValidationError("Not an ISO week, e.g. 2026-W48.") from None


def validate_date(value: str) -> None:
    from datetime import date

    try:
        date.fromisoformat(value)
    except ValueError:
        raise ma.ValidationError("Not an ISO date, e.g. 2026-12-25.") from None


_week = fields.String(validate=validate_week, metadata={"description": "ISO week, e.g. 2026-W48 (default: the current week)"})


class DigestSettingsSchema(StrictSchema):
    send_weekdays = fields.List(fields.Integer(validate=validate.Range(min=0, max=6)), validate=validate.Length(min=1, max=7),
                                metadata={"description": "Local weekdays digests may be sent on (0 = Monday)"})
    window_start_hour = fields.Integer(validate=validate.Range(min=0, max=23), metadata={"description": "First local hour allowed"})
    window_end_hour = fields.Integer(validate=validate.Range(min=1, max=24), metadata={"description": "Local hour sending stops (exclusive)"})
    quiet_days = fields.List(fields.String(validate=validate_date), validate=validate.Length(max=366),
                             metadata={"description": "Holidays as ISO dates (2026-12-25): no digest, it moves to the next allowed day"})
    rate_per_second = fields.Integer(validate=validate.Range(min=1, max=10000), metadata={"description": "Messages per second for the organisation, across all workers"})
    paused = fields.Boolean(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)


class RunCountsSchema(ma.Schema):
    queued = fields.Integer()
    sending = fields.Integer()
    sent = fields.Integer()
    failed = fields.Integer()
    skipped = fields.Integer()
    total = fields.Integer()


class DigestRunSchema(ma.Schema):
    id = fields.Integer()
    iso_week = fields.String()
    trigger = fields.String(metadata={"description": "schedule (the due-check) or manual"})
    started_by_user_id = Id(allow_none=True)
    created_at = fields.DateTime()
    created_count = fields.Integer(metadata={"description": "Sends this run created"})
    status = fields.String(metadata={"description": "running while any send is queued or sending, then done"})
    counts = fields.Nested(RunCountsSchema)


class RunStartSchema(StrictSchema):
    week = _week


class RunQuerySchema(PageQuerySchema):
    week = _week


class DigestSendSchema(ma.Schema):
    id = fields.Integer()
    run_id = Id(allow_none=True)
    employee_id = Id()
    iso_week = fields.String()
    state = fields.Enum(SendState, by_value=True)
    skip_reason = fields.String(allow_none=True)
    attempts = fields.Integer()
    last_error = fields.String(allow_none=True)
    message_id = fields.String(allow_none=True)
    next_attempt_at = fields.DateTime(allow_none=True)
    sent_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class SendQuerySchema(PageQuerySchema):
    run_id = Id()
    state = fields.Enum(SendState, by_value=True)
    employee_id = Id()
    week = _week


class PreviewQuerySchema(StrictSchema):
    employee_id = Id(required=True)
    week = _week


class PreviewSchema(ma.Schema):
    employee_id = Id()
    iso_week = fields.String()
    subject = fields.String()
    html = fields.String()
    text = fields.String()
    article_ids = fields.List(Id())
    skip_reason = fields.String(allow_none=True, metadata={"description": "Why it would not be sent (e.g. nothing new)"})
    send_state = fields.String(allow_none=True, metadata={"description": "State of this week's send, if one exists"})


class TestSendSchema(StrictSchema):
    employee_id = Id(load_default=None, allow_none=True, metadata={"description": "Whose digest to copy (default: the first active employee)"})
    week = _week


class AcceptedSchema(ma.Schema):
    status = fields.String()
    to = fields.String()


class SuppressionSchema(ma.Schema):
    id = fields.Integer()
    email = fields.String()
    hard_failures = fields.Integer()
    last_error = fields.String(allow_none=True)
    suppressed_at = fields.DateTime()
