from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from shared.models import ArticleStatus, SourceFormat
from shared.domain.articles import SEARCH_RESULT_CAP
from shared.schemas.common import Id, PageQuerySchema, StrictSchema, page_of

FORMATS = [f.value for f in SourceFormat]


def _aware(value):  # noqa: ANN001
    if value is not None and value.tzinfo is None:
        raise ma.ValidationError("Give a timezone offset, e.g. 2026-12-01T09:00:00Z.")


class PartnerSchema(StrictSchema):
    id = fields.Integer(dump_only=True)
    name = fields.String(required=True)
    website = fields.String()
    bio = fields.String()
    contact = fields.String()
    article_count = fields.Integer(dump_only=True)
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)


class PartnerCreateSchema(StrictSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    website = fields.Url(load_default="", schemes={"http", "https"}, validate=validate.Length(max=500))
    bio = fields.String(load_default="", validate=validate.Length(max=20000))
    contact = fields.String(load_default="", validate=validate.Length(max=300))


class PartnerUpdateSchema(StrictSchema):
    name = fields.String(validate=validate.Length(min=1, max=200))
    website = fields.Url(schemes={"http", "https"}, validate=validate.Length(max=500))
    bio = fields.String(validate=validate.Length(max=20000))
    contact = fields.String(validate=validate.Length(max=300))


class PartnerQuerySchema(PageQuerySchema):
    q = fields.String(validate=validate.Length(max=200), metadata={"description": "Search in partner names"})


class TopicSchema(StrictSchema):
    id = fields.Integer(dump_only=True)
    name = fields.String(required=True)
    slug = fields.String(dump_only=True)
    keywords = fields.List(fields.String())


class TopicCreateSchema(StrictSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=80))
    keywords = fields.List(fields.String(validate=validate.Length(min=1, max=80)), load_default=list, validate=validate.Length(max=100))


class PartnerRefSchema(StrictSchema):
    id = fields.Integer()
    name = fields.String()


class ArticleSchema(StrictSchema):
    id = fields.Integer(dump_only=True)
    title = fields.String(required=True)
    summary = fields.String()
    body = fields.String(attribute="body_source", metadata={"description": "The body as given, in `format`"})
    format = fields.Function(lambda a: a.source_format.value, metadata={"enum": FORMATS})
    body_html = fields.String(dump_only=True, metadata={"description": "Sanitised HTML"})
    body_text = fields.String(dump_only=True)
    reading_minutes = fields.Integer(dump_only=True)
    partner_id = Id(allow_none=True)
    partner = fields.Nested(PartnerRefSchema, allow_none=True, dump_only=True)
    topics = fields.Function(lambda a: [t.name for t in a.topics])
    status = fields.Enum(ArticleStatus, by_value=True)
    publish_at = fields.DateTime(allow_none=True)
    review_by = fields.Date(allow_none=True)
    version = fields.Integer(dump_only=True)
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)
    published_at = fields.DateTime(dump_only=True, allow_none=True)


class ArticleSearchPageSchema(page_of(ArticleSchema)):
    total = fields.Integer(
        required=True,
        metadata={"description": f"Matching articles, exact up to {SEARCH_RESULT_CAP:,}; beyond that {SEARCH_RESULT_CAP:,} and `total_is_exact` is false"},
    )
    total_is_exact = fields.Boolean(
        required=True,
        metadata={
            "description": f"False when more than {SEARCH_RESULT_CAP:,} articles match: only the {SEARCH_RESULT_CAP:,} most recently updated "
            "matches are listed (ranked by relevance when `q` is given) and pages stop there; refine the search to reach others"
        },
    )


class ArticleCreateSchema(StrictSchema):
    title = fields.String(required=True, validate=validate.Length(min=1, max=300))
    summary = fields.String(load_default="", validate=validate.Length(max=5000))
    body = fields.String(load_default="", validate=validate.Length(max=2_000_000))
    format = fields.String(load_default="text", validate=validate.OneOf(FORMATS))
    partner_id = Id(load_default=None, allow_none=True)
    topics = fields.List(fields.String(validate=validate.Length(min=1, max=80)), load_default=list)
    publish_at = fields.AwareDateTime(load_default=None, allow_none=True, validate=_aware)
    review_by = fields.Date(load_default=None, allow_none=True)


class ArticleUpdateSchema(StrictSchema):
    title = fields.String(validate=validate.Length(min=1, max=300))
    summary = fields.String(validate=validate.Length(max=5000))
    body = fields.String(validate=validate.Length(max=2_000_000))
    format = fields.String(validate=validate.OneOf(FORMATS))
    partner_id = Id(allow_none=True)
    topics = fields.List(fields.String(validate=validate.Length(min=1, max=80)))
    publish_at = fields.AwareDateTime(allow_none=True)
    review_by = fields.Date(allow_none=True)


class ArticleQuerySchema(PageQuerySchema):
    q = fields.String(validate=validate.Length(max=300), metadata={"description": "Full-text search over title, summary and body; results ranked"})
    status = fields.Enum(ArticleStatus, by_value=True)
    topic = fields.String(validate=validate.Length(max=80), metadata={"description": "Topic name or slug"})
    partner_id = Id()
    date_from = fields.Date(metadata={"description": "Published (or, unpublished, created) on or after"})
    date_to = fields.Date(metadata={"description": "Published (or, unpublished, created) on or before"})


class TransitionRequestSchema(StrictSchema):
    note = fields.String(load_default="", validate=validate.Length(max=500))


class PublishRequestSchema(TransitionRequestSchema):
    publish_at = fields.AwareDateTime(
        load_default=None, allow_none=True, metadata={"description": "In the future: schedule (the article stays in review until then)"}
    )


class RevisionSchema(StrictSchema):
    version = fields.Integer()
    change = fields.String()
    title = fields.String()
    summary = fields.String()
    format = fields.String(attribute="source_format")
    body = fields.String(attribute="body_source")
    body_html = fields.String()
    status = fields.String()
    partner_id = Id(allow_none=True)
    topics = fields.List(fields.String())
    author_user_id = Id(allow_none=True)
    author_label = fields.String()
    created_at = fields.DateTime()


class TransitionSchema(StrictSchema):
    from_status = fields.String()
    to_status = fields.String()
    actor_user_id = Id(allow_none=True)
    actor_label = fields.String()
    note = fields.String()
    at = fields.DateTime()


class HistorySchema(StrictSchema):
    revisions = fields.List(fields.Nested(RevisionSchema))
    transitions = fields.List(fields.Nested(TransitionSchema))


class ImportPartnerSchema(StrictSchema):
    id = fields.Integer()
    name = fields.String()
    created = fields.Boolean()


class ImportReportSchema(StrictSchema):
    filename = fields.String()
    format = fields.String()
    article_id = Id()
    duplicate = fields.Boolean(metadata={"description": "The same content was imported before; nothing new was created"})
    title = fields.String()
    title_proposed = fields.Boolean(metadata={"description": "No title line: the title was proposed from the text"})
    summary = fields.String()
    attribution = fields.String(allow_none=True)
    partner = fields.Nested(ImportPartnerSchema, allow_none=True)
    bio_found = fields.Boolean()
    sections = fields.Integer()
    headings = fields.List(fields.String())
    headings_proposed = fields.Boolean()
    captions = fields.List(fields.String())
    dropped_boilerplate = fields.List(fields.String())
    suggested_topics = fields.List(fields.String())


class ImportResultSchema(StrictSchema):
    results = fields.List(fields.Nested(ImportReportSchema))


class ArticleLinkSchema(StrictSchema):
    url = fields.String(metadata={"description": "Signed employee-facing URL (no login)"})
