"""Partners, the topic vocabulary and partner articles (import, review workflow, search)."""
from __future__ import annotations

from flask import request
from flask.views import MethodView

from services import context
from services.api.blueprint import Blueprint
from shared.domain import articles
from shared.pagination import paginate
from shared.schemas.articles import (
    ArticleCreateSchema,
    ArticleLinkSchema,
    ArticleQuerySchema,
    ArticleSchema,
    ArticleSearchPageSchema,
    ArticleUpdateSchema,
    HistorySchema,
    ImportResultSchema,
    PartnerCreateSchema,
    PartnerQuerySchema,
    PartnerSchema,
    PartnerUpdateSchema,
    PublishRequestSchema,
    TopicCreateSchema,
    TopicSchema,
    TransitionRequestSchema,
)
from shared.schemas.common import page_of

URL_PREFIX = ""
blp = Blueprint("articles", __name__, description="Partner articles, partners and topics")

_IF_MATCH_DOC = {
    "parameters": [
        {
            "in": "header",
            "name": "If-Match",
            "required": True,
            "schema": {"type": "string"},
            "description": "The ETag from GET; 412 if the article changed since, 428 if missing",
        }
    ]
}


def _etag(article) -> dict[str, str]:  # noqa: ANN001
    return {"ETag": f'"{article.version}"'}


# ---------------------------------------------------------------- partners


@blp.route("/partners")
class PartnerListView(MethodView):
    @blp.arguments(PartnerQuerySchema, location="query")
    @blp.response(200, page_of(PartnerSchema))
    def get(self, query):
        """List partners with their article counts"""
        session = context.get_session()
        page = paginate(session, articles.partners_query(query.get("q")), query["page"], query["per_page"])
        articles.with_article_counts(session, page.items)
        return page

    @blp.arguments(PartnerCreateSchema)
    @blp.response(201, PartnerSchema)
    def post(self, body):
        """Add a partner"""
        session = context.get_session()
        partner = articles.create_partner(session, context.current_user(), body)
        return articles.with_article_counts(session, [partner])[0]


@blp.route("/partners/<int:partner_id>")
class PartnerItemView(MethodView):
    @blp.response(200, PartnerSchema)
    def get(self, partner_id):
        """One partner"""
        session = context.get_session()
        return articles.with_article_counts(session, [articles.get_partner(session, partner_id)])[0]

    @blp.arguments(PartnerUpdateSchema)
    @blp.response(200, PartnerSchema)
    def patch(self, body, partner_id):
        """Change a partner's name, website, bio or contact"""
        session = context.get_session()
        partner = articles.update_partner(session, context.current_user(), partner_id, body)
        return articles.with_article_counts(session, [partner])[0]

    @blp.response(204)
    def delete(self, partner_id):
        """Remove a partner (its articles stay, without partner credit)"""
        articles.delete_partner(context.get_session(), context.current_user(), partner_id)


# ---------------------------------------------------------------- topics


@blp.route("/topics")
class TopicListView(MethodView):
    @blp.response(200, TopicSchema(many=True))
    def get(self):
        """The organisation's topic vocabulary (seeded on first use)"""
        return articles.list_topics(context.get_session())

    @blp.arguments(TopicCreateSchema)
    @blp.response(201, TopicSchema)
    def post(self, body):
        """Add a topic; its keywords drive topic suggestions on import"""
        return articles.create_topic(context.get_session(), context.current_user(), body["name"], body["keywords"])


@blp.route("/topics/<int:topic_id>")
class TopicItemView(MethodView):
    @blp.response(204)
    def delete(self, topic_id):
        """Remove a topic from the vocabulary (and from the articles that had it)"""
        articles.delete_topic(context.get_session(), context.current_user(), topic_id)


# ---------------------------------------------------------------- articles


@blp.route("/articles")
class ArticleListView(MethodView):
    @blp.arguments(ArticleQuerySchema, location="query")
    @blp.response(200, ArticleSearchPageSchema)
    def get(self, query):
        """Search and filter articles (ranked by relevance when `q` is given)

        Broad searches are bounded (see `total_is_exact`): a page past the listed
        matches of a capped result answers 422."""
        filters = articles.SearchFilters(
            status=query.get("status"),
            topic=query.get("topic"),
            partner_id=query.get("partner_id"),
            date_from=query.get("date_from"),
            date_to=query.get("date_to"),
        )
        return articles.search_articles(context.get_session(), query.get("q"), filters, query["page"], query["per_page"])

    @blp.arguments(ArticleCreateSchema)
    @blp.response(201, ArticleSchema)
    def post(self, body):
        """Create a draft article; the body is sanitised and stored as HTML plus text"""
        article = articles.create_article(context.get_session(), context.current_user(), body)
        return article, 201, _etag(article)


@blp.route("/articles/import")
class ArticleImportView(MethodView):
    @blp.doc(
        requestBody={
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                        "required": ["files"],
                    }
                }
            },
        }
    )
    @blp.response(201, ImportResultSchema, description="At least one new article was created")
    @blp.alt_response(200, schema=ImportResultSchema, description="Every file was a duplicate of an earlier import")
    def post(self):
        """Import .txt, .md or .html files (2 MB each, UTF-8) as draft articles and report what was recognised"""
        uploads = [articles.Upload(f.filename or "", f.read()) for f in request.files.getlist("files") + request.files.getlist("file")]
        results = articles.import_files(context.get_session(), context.current_user(), uploads)
        status = 201 if any(not r["duplicate"] for r in results) else 200
        return {"results": results}, status


@blp.route("/articles/<int:article_id>")
class ArticleItemView(MethodView):
    @blp.response(200, ArticleSchema, headers={"ETag": {"schema": {"type": "string"}, "description": "The article's version"}})
    def get(self, article_id):
        """One article; its ETag is the version to send back in If-Match"""
        article = articles.get_article(context.get_session(), article_id)
        return article, 200, _etag(article)

    @blp.arguments(ArticleUpdateSchema)
    @blp.doc(**_IF_MATCH_DOC)
    @blp.response(200, ArticleSchema)
    @blp.alt_response(412, response="PRECONDITION_FAILED")
    @blp.alt_response(428, response="PRECONDITION_REQUIRED")
    def patch(self, body, article_id):
        """Edit an article (needs If-Match: a stale version answers 412, none 428); every change is a revision"""
        expected = articles.parse_if_match(request.headers.get("If-Match"))
        article = articles.update_article(context.get_session(), context.current_user(), article_id, body, expected)
        return article, 200, _etag(article)

    @blp.response(204)
    def delete(self, article_id):
        """Delete an article and its history"""
        articles.delete_article(context.get_session(), context.current_user(), article_id)


def _transition(article_id: int, action: str, body: dict):
    expected = articles.parse_if_match(request.headers.get("If-Match"))
    article = articles.transition(
        context.get_session(),
        context.current_user(),
        article_id,
        action,
        note=body.get("note", ""),
        publish_at=body.get("publish_at"),
        expected_version=expected,
    )
    return article, 200, _etag(article)


@blp.route("/articles/<int:article_id>/submit")
class ArticleSubmitView(MethodView):
    @blp.arguments(TransitionRequestSchema)
    @blp.response(200, ArticleSchema)
    @blp.alt_response(412, response="PRECONDITION_FAILED")
    def post(self, body, article_id):
        """draft -> review (409 from any other status)"""
        return _transition(article_id, "submit", body)


@blp.route("/articles/<int:article_id>/reject")
class ArticleRejectView(MethodView):
    @blp.arguments(TransitionRequestSchema)
    @blp.response(200, ArticleSchema)
    @blp.alt_response(412, response="PRECONDITION_FAILED")
    def post(self, body, article_id):
        """review -> draft (409 from any other status)"""
        return _transition(article_id, "reject", body)


@blp.route("/articles/<int:article_id>/publish")
class ArticlePublishView(MethodView):
    @blp.arguments(PublishRequestSchema)
    @blp.response(200, ArticleSchema)
    @blp.alt_response(412, response="PRECONDITION_FAILED")
    def post(self, body, article_id):
        """review -> published now, or at a future `publish_at` (409 from any other status)"""
        return _transition(article_id, "publish", body)


@blp.route("/articles/<int:article_id>/archive")
class ArticleArchiveView(MethodView):
    @blp.arguments(TransitionRequestSchema)
    @blp.response(200, ArticleSchema)
    @blp.alt_response(412, response="PRECONDITION_FAILED")
    def post(self, body, article_id):
        """published -> archived (409 from any other status)"""
        return _transition(article_id, "archive", body)


@blp.route("/articles/<int:article_id>/restore")
class ArticleRestoreView(MethodView):
    @blp.arguments(TransitionRequestSchema)
    @blp.response(200, ArticleSchema)
    @blp.alt_response(412, response="PRECONDITION_FAILED")
    def post(self, body, article_id):
        """archived -> draft (409 from any other status)"""
        return _transition(article_id, "restore", body)


@blp.route("/articles/<int:article_id>/history")
class ArticleHistoryView(MethodView):
    @blp.response(200, HistorySchema)
    def get(self, article_id):
        """Every revision (content as of each version, who, when) and workflow step"""
        session = context.get_session()
        return {"revisions": articles.revisions(session, article_id), "transitions": articles.transitions(session, article_id)}


@blp.route("/articles/<int:article_id>/link")
class ArticleLinkView(MethodView):
    @blp.response(200, ArticleLinkSchema)
    def get(self, article_id):
        """The signed employee-facing URL of a published article"""
        session = context.get_session()
        article = articles.published_article(session, article_id)
        config = context.settings()
        return {"url": articles.article_link(config.public_url, config.secret_key, article.org_id, article.id)}
