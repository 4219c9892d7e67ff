"""Console pages for partner articles: list with search and filters, editor with
live preview, import with its recognition report, revision history, partners."""
from __future__ import annotations

from datetime import timezone

from flask import abort, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user

from services import context
from services.web.article_forms import ArticleForm, ImportForm, PartnerForm, TopicForm, TransitionForm
from services.web.forms import EmptyForm
from services.web.session import console_roles
from services.web.views import bp
from shared.domain import articles
from shared.domain.article_content import render as render_body
from shared.domain.article_content import sanitise_html
from shared.errors import DomainError
from shared.models import ArticleStatus, Role
from shared.pagination import paginate

PER_PAGE = 20
STATUS_CHOICES = [s.value for s in ArticleStatus]


def _date_arg(name: str):
    from datetime import date

    value = request.args.get(name) or ""
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _int_arg(name: str) -> int | None:
    value = request.args.get(name, "")
    return int(value) if value.isdigit() else None


@bp.get("/articles")
@console_roles(Role.HR_ADMIN)
def articles_list():
    session = context.get_session()
    status = request.args.get("status") or None
    filters = articles.SearchFilters(
        status=ArticleStatus(status) if status in STATUS_CHOICES else None,
        topic=request.args.get("topic") or None,
        partner_id=_int_arg("partner_id"),
        date_from=_date_arg("date_from"),
        date_to=_date_arg("date_to"),
    )
    page_no = max(request.args.get("page", 1, type=int), 1)
    args = {k: v for k, v in request.args.items() if k != "page" and v}
    try:
        page = articles.search_articles(session, request.args.get("q"), filters, page_no, PER_PAGE)
    except DomainError as error:  # a page past a capped result list
        flash(error.detail, "error")
        return redirect(url_for("console.articles_list", **args))
    return render_template(
        "console/articles/list.html",
        page=page,
        args=args,
        statuses=STATUS_CHOICES,
        topics=articles.list_topics(session),
        partners=list(session.scalars(articles.partners_query())),
    )


def _article_form(session, article=None) -> ArticleForm:  # noqa: ANN001
    form = ArticleForm(obj=None)
    partners = list(session.scalars(articles.partners_query()))
    form.partner_id.choices = [(0, "No partner")] + [(p.id, p.name) for p in partners]
    form.topics.choices = [(t.name, t.name) for t in articles.list_topics(session)]
    if article is not None and request.method == "GET":
        form.title.data = article.title
        form.summary.data = article.summary
        form.format.data = article.source_format.value
        form.body.data = article.body_source
        form.partner_id.data = article.partner_id or 0
        form.topics.data = [t.name for t in article.topics]
        form.review_by.data = article.review_by
        form.version.data = str(article.version)
    return form


def _form_changes(form: ArticleForm) -> dict:
    return {
        "title": form.title.data or "",
        "summary": form.summary.data or "",
        "format": form.format.data,
        "body": (form.body.data or "").replace("\r\n", "\n"),
        "partner_id": form.partner_id.data or None,
        "topics": form.topics.data or [],
        "review_by": form.review_by.data,
    }


def _apply_errors(form, error: DomainError) -> None:  # noqa: ANN001
    for field, messages in (error.errors or {}).items():
        target = getattr(form, field, None)
        if target is not None and hasattr(target, "errors"):
            target.errors = list(target.errors or []) + list(messages)
    flash(error.detail, "error")


@bp.route("/articles/new", methods=["GET", "POST"])
@console_roles(Role.HR_ADMIN)
def article_new():
    session = context.get_session()
    form = _article_form(session)
    if form.validate_on_submit():
        try:
            article = articles.create_article(session, current_user.user, _form_changes(form))
        except DomainError as error:
            _apply_errors(form, error)
        else:
            flash("Draft created.", "success")
            return redirect(url_for("console.article_detail", article_id=article.id))
    return render_template("console/articles/edit.html", form=form, article=None, preview_html=""), 400 if request.method == "POST" else 200


@bp.get("/articles/<int:article_id>")
@console_roles(Role.HR_ADMIN)
def article_detail(article_id: int):
    session = context.get_session()
    article = _article_or_404(session, article_id)
    config = context.settings()
    link = (
        articles.article_link(config.public_url, config.secret_key, article.org_id, article.id)
        if article.status == ArticleStatus.PUBLISHED
        else None
    )
    organisation = current_user.user.organisation
    return render_template(
        "console/articles/detail.html",
        article=article,
        body_html=sanitise_html(article.body_html),
        disclosure=articles.disclosure(article, organisation),
        actions=[a for a, (sources, _) in articles.TRANSITIONS.items() if article.status in sources],
        transition_form=TransitionForm(),
        delete_form=EmptyForm(),
        link=link,
        transitions=articles.transitions(session, article.id),
    )


def _article_or_404(session, article_id: int):  # noqa: ANN001
    return articles.get_article(session, article_id)


@bp.route("/articles/<int:article_id>/edit", methods=["GET", "POST"])
@console_roles(Role.HR_ADMIN)
def article_edit(article_id: int):
    session = context.get_session()
    article = _article_or_404(session, article_id)
    form = _article_form(session, article)
    status = 200
    if form.validate_on_submit():
        expected = int(form.version.data) if (form.version.data or "").isdigit() else None
        try:
            articles.update_article(session, current_user.user, article.id, _form_changes(form), expected)
        except articles.PreconditionFailed:
            flash(
                f"Someone else saved this article while you were editing (it is now at version {article.version}). "
                "Your changes were not saved: copy them, reload the page and apply them again.",
                "error",
            )
            status = 409
        except DomainError as error:
            _apply_errors(form, error)
            status = 400
        else:
            flash("Article saved.", "success")
            return redirect(url_for("console.article_detail", article_id=article.id))
    elif request.method == "POST":
        status = 400
    return render_template("console/articles/edit.html", form=form, article=article, preview_html=sanitise_html(article.body_html)), status


@bp.post("/articles/preview")
@console_roles(Role.HR_ADMIN)
def article_preview():
    """Live preview for the editor: the body as it will be stored (sanitised)."""
    form = EmptyForm()
    if not form.validate_on_submit():
        abort(400)
    fmt = request.form.get("format", "text")
    if fmt not in ("text", "markdown", "html"):
        abort(400)
    body_html, _text, minutes = render_body(request.form.get("body", "")[:2_000_000], fmt)
    return jsonify({"html": body_html, "reading_minutes": minutes})


@bp.post("/articles/<int:article_id>/transition")
@console_roles(Role.HR_ADMIN)
def article_transition(article_id: int):
    session = context.get_session()
    article = _article_or_404(session, article_id)
    form = TransitionForm()
    if not form.validate_on_submit():
        flash("Could not read the request; try again.", "error")
        return redirect(url_for("console.article_detail", article_id=article.id))
    publish_at = form.publish_at.data.replace(tzinfo=timezone.utc) if form.publish_at.data else None
    expected = int(form.version.data) if (form.version.data or "").isdigit() else None
    try:
        articles.transition(session, current_user.user, article.id, form.action.data, publish_at=publish_at, expected_version=expected)
    except DomainError as error:
        flash(error.detail, "error")
    else:
        messages = {
            "submit": "Sent for review.",
            "reject": "Sent back to draft.",
            "publish": "Published." if article.status == ArticleStatus.PUBLISHED else "Scheduled for publication.",
            "archive": "Archived.",
            "restore": "Restored as a draft.",
        }
        flash(messages.get(form.action.data, "Done."), "success")
    return redirect(url_for("console.article_detail", article_id=article.id))


@bp.post("/articles/<int:article_id>/delete")
@console_roles(Role.HR_ADMIN)
def article_delete(article_id: int):
    session = context.get_session()
    article = _article_or_404(session, article_id)
    if not EmptyForm().validate_on_submit():
        abort(400)
    articles.delete_article(session, current_user.user, article.id)
    flash("Article deleted.", "success")
    return redirect(url_for("console.articles_list"))


@bp.get("/articles/<int:article_id>/history")
@console_roles(Role.HR_ADMIN)
def article_history(article_id: int):
    session = context.get_session()
    article = _article_or_404(session, article_id)
    revisions = articles.revisions(session, article.id)
    return render_template(
        "console/articles/history.html",
        article=article,
        revisions=[(r, sanitise_html(r.body_html)) for r in revisions],
        transitions=articles.transitions(session, article.id),
    )


@bp.route("/articles/import", methods=["GET", "POST"])
@console_roles(Role.HR_ADMIN)
def article_import():
    session = context.get_session()
    form = ImportForm()
    results = None
    status = 200
    if form.validate_on_submit():
        uploads = [articles.Upload(f.filename or "", f.read()) for f in request.files.getlist(form.files.name) if f.filename]
        try:
            results = articles.import_files(session, current_user.user, uploads)
        except DomainError as error:
            flash(error.detail, "error")
            status = 400
    elif request.method == "POST":
        status = 400
    return render_template("console/articles/import.html", form=form, results=results), status


# ---------------------------------------------------------------- partners


@bp.get("/partners")
@console_roles(Role.HR_ADMIN)
def partners_list():
    session = context.get_session()
    page = paginate(session, articles.partners_query(request.args.get("q") or None), max(request.args.get("page", 1, type=int), 1), 50)
    articles.with_article_counts(session, page.items)
    return render_template("console/articles/partners.html", page=page)


@bp.route("/partners/new", methods=["GET", "POST"])
@console_roles(Role.HR_ADMIN)
def partner_new():
    session = context.get_session()
    form = PartnerForm()
    if form.validate_on_submit():
        try:
            partner = articles.create_partner(session, current_user.user, _partner_data(form))
        except DomainError as error:
            _apply_errors(form, error)
        else:
            flash(f"Partner {partner.name} added.", "success")
            return redirect(url_for("console.partner_edit", partner_id=partner.id))
    return render_template("console/articles/partner_edit.html", form=form, partner=None, partner_articles=[]), 400 if request.method == "POST" else 200


def _partner_data(form: PartnerForm) -> dict:
    return {
        "name": form.name.data or "",
        "website": form.website.data or "",
        "contact": form.contact.data or "",
        "bio": (form.bio.data or "").replace("\r\n", "\n"),
    }


@bp.route("/partners/<int:partner_id>", methods=["GET", "POST"])
@console_roles(Role.HR_ADMIN)
def partner_edit(partner_id: int):
    session = context.get_session()
    partner = articles.get_partner(session, partner_id)
    form = PartnerForm(obj=partner)
    if form.validate_on_submit():
        try:
            articles.update_partner(session, current_user.user, partner.id, _partner_data(form))
        except DomainError as error:
            _apply_errors(form, error)
        else:
            flash("Partner saved.", "success")
            return redirect(url_for("console.partner_edit", partner_id=partner.id))
    partner_articles = articles.search_articles(session, None, articles.SearchFilters(partner_id=partner.id), 1, 100).items
    return render_template("console/articles/partner_edit.html", form=form, partner=partner, partner_articles=partner_articles), (
        400 if request.method == "POST" else 200
    )


# ---------------------------------------------------------------- topic vocabulary


@bp.route("/topics", methods=["GET", "POST"])
@console_roles(Role.HR_ADMIN)
def topics_page():
    session = context.get_session()
    form = TopicForm()
    status = 200
    if form.validate_on_submit():
        keywords = [k.strip() for k in (form.keywords.data or "").split(",") if k.strip()]
        try:
            topic = articles.create_topic(session, current_user.user, form.name.data, keywords)
        except DomainError as error:
            _apply_errors(form, error)
            status = 400
        else:
            flash(f"Topic {topic.name} added.", "success")
            return redirect(url_for("console.topics_page"))
    elif request.method == "POST":
        status = 400
    return render_template("console/articles/topics.html", form=form, topics=articles.list_topics(session), delete_form=EmptyForm()), status


@bp.post("/topics/<int:topic_id>/delete")
@console_roles(Role.HR_ADMIN)
def topic_delete(topic_id: int):
    session = context.get_session()
    topic = articles.get_topic(session, topic_id)
    if not EmptyForm().validate_on_submit():
        abort(400)
    articles.delete_topic(session, current_user.user, topic.id)
    flash(f"Topic {topic.name} removed.", "success")
    return redirect(url_for("console.topics_page"))
