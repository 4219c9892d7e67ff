"""Request and response bodies of employees, import jobs, programs and enrolments."""
from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from shared.models import ConsentKind, ConsentSource, EmployeeStatus, EnrolmentStatus, ImportMode, ProgramStatus
from shared.schemas.common import Id, PageQuerySchema, StrictSchema, validate_timezone

_topics = fields.List(fields.String(validate=validate.Length(min=1, max=60)), validate=validate.Length(max=30))


class EmployeeSchema(StrictSchema):
    id = fields.Integer(dump_only=True)
    external_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    email = fields.Email(required=True, validate=validate.Length(max=254))
    first_name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    last_name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    department = fields.String(load_default="", validate=validate.Length(max=100))
    team = fields.String(load_default="", validate=validate.Length(max=100))
    manager_external_id = fields.String(allow_none=True, load_default=None, validate=validate.Length(max=64))
    manager_id = Id(dump_only=True, allow_none=True)
    timezone = fields.String(load_default="UTC", validate=[validate.Length(max=64), validate_timezone])
    locale = fields.String(load_default="", validate=validate.Length(max=16))
    status = fields.Enum(EmployeeStatus, by_value=True, dump_only=True)
    left_at = fields.DateTime(dump_only=True, allow_none=True)
    digest_consent = fields.Boolean(metadata={"description": "Current consent to digest emails"})
    analytics_consent = fields.Boolean(metadata={"description": "Current consent to activity analytics"})
    digest_weekday = fields.Integer(validate=validate.Range(min=0, max=6), metadata={"description": "0 = Monday"})
    digest_hour = fields.Integer(validate=validate.Range(min=0, max=23), metadata={"description": "Local hour"})
    digest_topics = _topics
    paused_until = fields.Date(allow_none=True)
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)


class EmployeeUpdateSchema(StrictSchema):
    external_id = fields.String(validate=validate.Length(min=1, max=64))
    email = fields.Email(validate=validate.Length(max=254))
    first_name = fields.String(validate=validate.Length(min=1, max=100))
    last_name = fields.String(validate=validate.Length(min=1, max=100))
    department = fields.String(validate=validate.Length(max=100))
    team = fields.String(validate=validate.Length(max=100))
    manager_external_id = fields.String(allow_none=True, validate=validate.Length(max=64))
    timezone = fields.String(validate=[validate.Length(max=64), validate_timezone])
    locale = fields.String(validate=validate.Length(max=16))
    status = fields.Enum(EmployeeStatus, by_value=True, metadata={"description": "`left` offboards: no more mail from now on"})
    digest_consent = fields.Boolean()
    analytics_consent = fields.Boolean()
    digest_weekday = fields.Integer(validate=validate.Range(min=0, max=6))
    digest_hour = fields.Integer(validate=validate.Range(min=0, max=23))
    digest_topics = _topics
    paused_until = fields.Date(allow_none=True)


class EmployeeQuerySchema(PageQuerySchema):
    q = fields.String(validate=validate.Length(max=200), metadata={"description": "Search in email, names and external id"})
    status = fields.Enum(EmployeeStatus, by_value=True)
    department = fields.String(validate=validate.Length(max=100))
    team = fields.String(validate=validate.Length(max=100))
    manager_id = Id()


class ConsentSchema(StrictSchema):
    id = fields.Integer(dump_only=True)
    kind = fields.Enum(ConsentKind, by_value=True)
    granted = fields.Boolean()
    source = fields.Enum(ConsentSource, by_value=True, dump_only=True)
    actor_user_id = Id(dump_only=True, allow_none=True)
    at = fields.DateTime(dump_only=True)


class ConsentListSchema(ma.Schema):
    items = fields.List(fields.Nested(ConsentSchema))


class PreferenceLinkSchema(ma.Schema):
    url = fields.String(required=True)
    token = fields.String(required=True)


class ImportQuerySchema(StrictSchema):
    mode = fields.Enum(ImportMode, by_value=True, load_default=ImportMode.PARTIAL)
    dry_run = fields.Boolean(load_default=False, metadata={"description": "Same as mode=dry_run"})
    mark_missing_as_left = fields.Boolean(load_default=False, metadata={"description": "Full sync: employees absent from the file become `left`"})
    run_async = fields.Boolean(data_key="async", load_default=False, metadata={"description": "Always queue, even for a small file"})


class ImportFileSchema(ma.Schema):
    file = fields.Raw(metadata={"type": "string", "format": "binary"})


class ImportErrorSchema(ma.Schema):
    line = fields.Integer()
    column = fields.String(allow_none=True)
    kind = fields.String()
    message = fields.String()


class ImportJobSchema(ma.Schema):
    id = fields.Integer()
    status = fields.String(metadata={"description": "queued, validating, applying, done or failed"})
    mode = fields.String()
    mark_missing_as_left = fields.Boolean()
    filename = fields.String()
    rows_total = fields.Integer(allow_none=True)
    rows_done = fields.Integer()
    created = fields.Integer()
    updated = fields.Integer()
    unchanged = fields.Integer()
    marked_left = fields.Integer()
    error_rows = fields.Integer()
    error_count = fields.Integer()
    errors = fields.List(fields.Nested(ImportErrorSchema), metadata={"description": "The first 1,000 errors, by line"})
    applied = fields.Boolean()
    failure = fields.String(allow_none=True)
    created_at = fields.DateTime()
    finished_at = fields.DateTime(allow_none=True)


class ProgramSchema(StrictSchema):
    id = fields.Integer(dump_only=True)
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    description = fields.String(load_default="", validate=validate.Length(max=20000))
    topics = _topics
    starts_on = fields.Date(allow_none=True)
    ends_on = fields.Date(allow_none=True)
    capacity = fields.Integer(allow_none=True, validate=validate.Range(min=1, max=1_000_000))
    status = fields.Enum(ProgramStatus, by_value=True, load_default=ProgramStatus.DRAFT)
    counts = fields.Dict(dump_only=True, metadata={"description": "Enrolments by status"})
    created_at = fields.DateTime(dump_only=True)


class ProgramUpdateSchema(StrictSchema):
    name = fields.String(validate=validate.Length(min=1, max=200))
    description = fields.String(validate=validate.Length(max=20000))
    topics = _topics
    starts_on = fields.Date(allow_none=True)
    ends_on = fields.Date(allow_none=True)
    capacity = fields.Integer(allow_none=True, validate=validate.Range(min=1, max=1_000_000))
    status = fields.Enum(ProgramStatus, by_value=True)


class ProgramQuerySchema(PageQuerySchema):
    status = fields.Enum(ProgramStatus, by_value=True)
    q = fields.String(validate=validate.Length(max=200))


class EnrolmentEmployeeSchema(ma.Schema):
    id = fields.Integer()
    external_id = fields.String()
    email = fields.String()
    first_name = fields.String()
    last_name = fields.String()


class EnrolmentSchema(ma.Schema):
    id = fields.Integer()
    program_id = Id()
    employee_id = Id()
    employee = fields.Nested(EnrolmentEmployeeSchema)
    status = fields.Enum(EnrolmentStatus, by_value=True)
    waitlist_position = fields.Integer(allow_none=True)
    source = fields.String()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class EnrolmentRequestSchema(StrictSchema):
    employee_id = Id(metadata={"description": "Enrol one employee"})
    employee_ids = fields.List(Id(), validate=validate.Length(min=1, max=1000), metadata={"description": "Enrol many"})


class EnrolmentResultSchema(ma.Schema):
    items = fields.List(fields.Nested(EnrolmentSchema))


class EnrolmentQuerySchema(PageQuerySchema):
    status = fields.Enum(EnrolmentStatus, by_value=True)


class EnrolmentEventSchema(ma.Schema):
    id = fields.Integer()
    program_id = Id()
    employee_id = Id()
    action = fields.String()
    source = fields.String()
    actor_user_id = Id(allow_none=True)
    at = fields.DateTime()


class BulkWithdrawSchema(StrictSchema):
    employee_ids = fields.List(Id(), validate=validate.Length(min=1, max=1000))
