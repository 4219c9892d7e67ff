"""The employee-facing article page: a stable signed URL (from the digest), no login."""
from __future__ import annotations

from flask import Blueprint, abort, render_template

from services import context
from shared.domain import accounts, activity, articles
from shared.domain.article_content import sanitise_html
from shared.errors import NotFound

bp = Blueprint("reader", __name__, template_folder="templates")

# The page shows untrusted (sanitised) partner content: no scripts at all, styles
# and images only from us (images also from https), nothing framed, no referrer.
READER_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' https:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


@bp.get("/a/<token>")
def article_page(token: str):
    link = articles.read_article_link(context.settings().secret_key, token)
    if link is None:
        abort(404)
    with context.database().session(link.org_id) as session:
        try:
            article = articles.published_article(session, link.article_id)
            organisation = accounts.get_organisation(session, link.org_id)
        except NotFound:
            abort(404)
        if link.employee_id is not None:  # a link from the employee's digest
            activity.record_article_read(session, link.employee_id, article.id)
        partner = article.partner
        page = render_template(
            "reader/article.html",
            article=article,
            organisation=organisation,
            partner=partner,
            body_html=sanitise_html(article.body_html),
            disclosure=articles.disclosure(article, organisation),
            bio_paragraphs=[p for p in (partner.bio if partner else "").split("\n\n") if p.strip()],
            partner_website=partner.website if partner and partner.website.startswith(("https://", "http://")) else None,
        )
    return page, 200, {"Content-Security-Policy": READER_CSP, "Referrer-Policy": "no-referrer", "Cache-Control": "private, max-age=300"}
