"""Activity ingestion and anonymised reports: request and response shapes."""
from __future__ import annotations

from marshmallow import fields, validate

from shared.domain.activity import MAX_BATCH
from shared.domain.reports import GROUP_KINDS, MEASURES, WINDOWS
from shared.models import EVENT_KINDS
from shared.schemas.common import Id, StrictSchema
from shared.schemas.digests import validate_week


class ActivityItemSchema(StrictSchema):
    event_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    kind = fields.String(required=True, validate=validate.OneOf(EVENT_KINDS))
    employee_id = Id(required=True, strict=True)
    occurred_at = fields.AwareDateTime(required=True)
    score = fields.Integer(load_default=None, allow_none=True, strict=True)
    article_id = Id(load_default=None, allow_none=True, strict=True)
    program_id = Id(load_default=None, allow_none=True, strict=True)
    topic = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=100))


class ActivityBatchSchema(StrictSchema):
    # Items are validated one by one in the view, so one bad item does not reject the batch.
    events = fields.List(fields.Raw(), required=True, validate=validate.Length(min=1, max=MAX_BATCH))


class ItemErrorSchema(StrictSchema):
    index = fields.Integer()
    event_id = fields.String(allow_none=True)
    errors = fields.Dict(keys=fields.String(), values=fields.List(fields.String()))


class IngestResultSchema(StrictSchema):
    accepted = fields.Integer()
    duplicate = fields.Integer()
    ignored_no_consent = fields.Integer()
    errors = fields.List(fields.Nested(ItemErrorSchema))


class ReportQuerySchema(StrictSchema):
    period = fields.String(load_default=None, validate=validate_week)
    window = fields.Integer(load_default=1, validate=validate.OneOf(WINDOWS))
    measure = fields.String(load_default="participation", validate=validate.OneOf(list(MEASURES)))
    group = fields.String(load_default=None, validate=validate.Length(max=260),
                          metadata={"description": f"A group kind ({', '.join(GROUP_KINDS)}) or one group id, e.g. line:12, department:Sales"})


class ReportCellSchema(StrictSchema):
    group = fields.String()
    group_kind = fields.String()
    label = fields.String()
    parent = fields.String(allow_none=True)
    bucket = fields.String(allow_none=True)
    suppressed = fields.Boolean()
    reason = fields.String(allow_none=True)
    people_count = fields.Integer(allow_none=True)
    values = fields.Dict(keys=fields.String(), values=fields.Float(allow_none=True), allow_none=True)
    change = fields.Dict(keys=fields.String(), values=fields.Float(), allow_none=True)


class ReportSchema(StrictSchema):
    period = fields.String()
    window = fields.Integer()
    measure = fields.String()
    k = fields.Integer()
    dp = fields.Dict()
    cells = fields.List(fields.Nested(ReportCellSchema))


class ReportSettingsSchema(StrictSchema):
    activity_retention_months = fields.Integer(validate=validate.Range(min=1, max=120))
    dp_enabled = fields.Boolean()
    dp_mechanism = fields.String(validate=validate.OneOf(["laplace", "gaussian"]))
    epsilon_per_period = fields.Float(validate=validate.Range(min=0.01, max=100))
    epsilon_per_value = fields.Float(validate=validate.Range(min=0.001, max=10))
    last_built_at = fields.AwareDateTime(dump_only=True)


class BuildSchema(StrictSchema):
    weeks = fields.List(fields.String(validate=validate_week), load_default=None)
