"""Request and response bodies of program sessions and session attendance."""
from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from shared.schemas.common import Id, PageQuerySchema, StrictSchema
from shared.schemas.employees import EnrolmentEmployeeSchema

_join_url = fields.String(
    validate=[validate.Length(max=500), validate.Regexp(r"^(https?://\S+)?$", error="Must be an http:// or https:// address.")],
    metadata={"description": "Link to join online (http or https); empty for in-person sessions"},
)
_starts_at = fields.AwareDateTime(
    format="iso", metadata={"description": "Start with a UTC offset, e.g. 2026-12-01T18:00:00+01:00; answered in UTC"},
)
_duration = fields.Integer(validate=validate.Range(min=1, max=24 * 60), metadata={"description": "Length in minutes"})
_capacity = fields.Integer(allow_none=True, validate=validate.Range(min=1, max=1_000_000),
                           metadata={"description": "Places; null for no limit"})


class ProgramSessionSchema(StrictSchema):
    id = fields.Integer(dump_only=True)
    program_id = fields.Integer(dump_only=True)
    title = fields.String(required=True, validate=validate.Length(min=1, max=200))
    starts_at = fields.AwareDateTime(required=True, format="iso", metadata=_starts_at.metadata)
    duration_minutes = fields.Integer(required=True, validate=_duration.validate, metadata=_duration.metadata)
    location = fields.String(load_default="", validate=validate.Length(max=200), metadata={"description": "Room or address"})
    join_url = fields.String(load_default="", validate=_join_url.validate, metadata=_join_url.metadata)
    capacity = _capacity
    attended_count = fields.Integer(dump_only=True, metadata={"description": "Employees marked as attended"})
    created_at = fields.DateTime(dump_only=True)


class ProgramSessionUpdateSchema(StrictSchema):
    title = fields.String(validate=validate.Length(min=1, max=200))
    starts_at = _starts_at
    duration_minutes = _duration
    location = fields.String(validate=validate.Length(max=200))
    join_url = _join_url
    capacity = fields.Integer(allow_none=True, validate=_capacity.validate, metadata=_capacity.metadata)


class ProgramSessionQuerySchema(PageQuerySchema):
    upcoming = fields.Boolean(load_default=False, metadata={"description": "Only sessions that have not started yet"})


class AttendanceRequestSchema(StrictSchema):
    employee_id = Id(required=True, metadata={"description": "An employee enrolled in the program"})


class AttendanceSchema(ma.Schema):
    id = fields.Integer()
    session_id = fields.Integer()
    employee_id = fields.Integer()
    employee = fields.Nested(EnrolmentEmployeeSchema)
    marked_by_user_id = fields.Integer(allow_none=True)
    marked_at = fields.DateTime()
