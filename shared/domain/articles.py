"""Partner articles: partners, topic vocabulary, articles with revisions and a review
workflow, import, full-text search and what employees may see.

Every function takes a tenant-scoped session (``Database.session(org_id)``): the
tenant guard filters and stamps ``org_id``, so nothing here filters by it by hand.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Float, Integer, Select, false, func, or_, select, text, true
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from shared import security
from shared.db import across_tenants, plan_with_values, utcnow
from shared.domain import article_content, article_import, audit
from shared.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    PreconditionRequired,
    UnsupportedMediaType,
)
from shared.models import Article, ArticleRevision, ArticleStatus, ArticleTransition, Organisation, Partner, SourceFormat, Topic, User
from shared.pagination import Page, list_query

MAX_IMPORT_BYTES = 2 * 1024 * 1024
IMPORT_EXTENSIONS = {".txt": "text", ".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html"}
ARTICLE_LINK_PURPOSE = "article"
# Links in digests stay valid for a year: the page must still open from an old email.
ARTICLE_LINK_MAX_AGE_SECONDS = 366 * 24 * 3600
EXAMPLE_ARTICLE = Path(__file__).resolve().parent.parent / "data" / "partner-article-example.txt"

DEFAULT_TOPICS: dict[str, list[str]] = {
    "exercise": [
        "exercise", "physical activity", "workout", "work out", "resistance training", "strength training",
        "weight lifting", "fitness", "walking", "running", "yoga", "gardening", "aerobic", "muscle", "muscles",
        "movement", "sport", "cycling", "swimming", "steps",
    ],
    "mental health": [
        "mental health", "depression", "anxiety", "mood", "cognitive", "mental well-being", "mental wellbeing",
        "antidepressant", "antidepressants", "self-esteem", "therapy", "counselling", "mental fitness", "psychological", "emotional",
    ],
    "sleep": ["sleep", "insomnia", "nap", "naps", "bedtime", "circadian", "tiredness", "fatigue"],
    "nutrition": ["nutrition", "diet", "food", "eating", "meal", "meals", "vitamin", "vitamins", "protein", "hydration", "fruit", "vegetables", "sugar"],
    "stress": ["stress", "stressful", "burnout", "relaxation", "mindfulness", "pressure", "cortisol", "overwhelm", "breathing"],
    "financial wellbeing": ["money", "finance", "finances", "financial", "budget", "debt", "savings", "pension", "mortgage", "spending"],
    "social connection": [
        "loneliness", "lonely", "friends", "friendship", "community", "social", "relationships", "connection", "isolation", "volunteering",
    ],
}

# action -> (statuses it may start from, status it leads to)
TRANSITIONS: dict[str, tuple[frozenset[ArticleStatus], ArticleStatus]] = {
    "submit": (frozenset({ArticleStatus.DRAFT}), ArticleStatus.REVIEW),
    "reject": (frozenset({ArticleStatus.REVIEW}), ArticleStatus.DRAFT),
    "publish": (frozenset({ArticleStatus.REVIEW}), ArticleStatus.PUBLISHED),
    "archive": (frozenset({ArticleStatus.PUBLISHED}), ArticleStatus.ARCHIVED),
    "restore": (frozenset({ArticleStatus.ARCHIVED}), ArticleStatus.DRAFT),
}


def _actor_label(actor: User | None) -> str:
    return f"user:{actor.id}" if actor else "system"


# ---------------------------------------------------------------- topics


def slugify_topic(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.casefold()).strip("-")[:80]


def ensure_topics(session: Session) -> None:
    """Seed the organisation's vocabulary the first time it is needed."""
    if session.scalar(select(func.count()).select_from(Topic)) == 0:
        for name, keywords in DEFAULT_TOPICS.items():
            session.add(Topic(name=name, slug=slugify_topic(name), keywords=list(keywords)))
        session.flush()


@list_query
def topics_query() -> Select:
    return select(Topic).order_by(Topic.name)


def list_topics(session: Session) -> list[Topic]:
    ensure_topics(session)
    return list(session.scalars(topics_query()))


def get_topic(session: Session, topic_id: int) -> Topic:
    topic = session.get(Topic, topic_id)
    if topic is None:
        raise NotFound(f"Topic {topic_id} not found")
    return topic


def create_topic(session: Session, actor: User | None, name: str, keywords: list[str] | None = None) -> Topic:
    ensure_topics(session)
    name = re.sub(r"\s+", " ", name).strip()
    slug = slugify_topic(name)
    if not slug:
        raise InvalidInput("Name required", errors={"name": ["Must contain letters or digits."]})
    if session.scalar(select(Topic.id).where(Topic.slug == slug)) is not None:
        raise Conflict(f"Topic {name!r} already exists", errors={"name": ["Already in the vocabulary."]})
    words = [w.strip() for w in (keywords or []) if w.strip()] or [name.casefold()]
    topic = Topic(name=name, slug=slug, keywords=words)
    session.add(topic)
    session.flush()
    audit.record(session, actor, "topic.created", "topic", topic.id)
    return topic


def delete_topic(session: Session, actor: User | None, topic_id: int) -> None:
    topic = get_topic(session, topic_id)
    session.delete(topic)
    audit.record(session, actor, "topic.deleted", "topic", topic_id)


def resolve_topics(session: Session, names: list[str]) -> list[Topic]:
    """Topics by name or slug; every one must be in the vocabulary."""
    ensure_topics(session)
    wanted = {slugify_topic(n): n for n in names if n.strip()}
    found = {t.slug: t for t in session.scalars(select(Topic).where(Topic.slug.in_(list(wanted))))} if wanted else {}
    unknown = [n for slug, n in wanted.items() if slug not in found]
    if unknown:
        raise InvalidInput(
            "Unknown topics", errors={"topics": [f"Not in the organisation's vocabulary: {', '.join(sorted(unknown))}."]}
        )
    return sorted(found.values(), key=lambda t: t.name)


def suggest_topics(session: Session, text_: str, *, title: str = "", summary: str = "", limit: int = 3) -> list[str]:
    """Keyword scoring against the organisation's vocabulary: occurrences of each
    topic's keywords (title and summary count double), topics well above the noise."""
    ensure_topics(session)
    body = text_.casefold()
    head = f"{title}\n{summary}".casefold()
    scores: dict[str, int] = {}
    for topic in session.scalars(topics_query()):
        score = 0
        for keyword in topic.keywords or []:
            pattern = re.compile(rf"\b{re.escape(keyword.casefold())}s?\b")
            score += len(pattern.findall(body)) + 2 * len(pattern.findall(head))
        if score:
            scores[topic.name] = score
    if not scores:
        return []
    top = max(scores.values())
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return [name for name, score in ranked if score >= max(3, top * 0.2)][:limit]


# ---------------------------------------------------------------- partners


def partner_key(name: str) -> str:
    return re.sub(r"\s+", " ", name).strip().casefold()[:200]


@list_query
def partners_query(q: str | None = None) -> Select:
    stmt = select(Partner).order_by(Partner.name_key)
    if q:
        stmt = stmt.where(Partner.name_key.like(f"%{partner_key(q)}%"))
    return stmt


def article_counts(session: Session, partner_ids: list[int]) -> dict[int, int]:
    if not partner_ids:
        return {}
    rows = session.execute(
        select(Article.partner_id, func.count()).where(Article.partner_id.in_(partner_ids)).group_by(Article.partner_id)
    )
    return {pid: n for pid, n in rows}


def with_article_counts(session: Session, partners: list[Partner]) -> list[Partner]:
    counts = article_counts(session, [p.id for p in partners])
    for p in partners:
        p.article_count = counts.get(p.id, 0)
    return partners


def get_partner(session: Session, partner_id: int) -> Partner:
    partner = session.get(Partner, partner_id)
    if partner is None:
        raise NotFound(f"Partner {partner_id} not found")
    return partner


def _check_partner_name(session: Session, name: str, exclude_id: int | None = None) -> str:
    name = re.sub(r"\s+", " ", name or "").strip()
    if not name:
        raise InvalidInput("Name required", errors={"name": ["Must not be empty."]})
    stmt = select(Partner.id).where(Partner.name_key == partner_key(name))
    if exclude_id is not None:
        stmt = stmt.where(Partner.id != exclude_id)
    if session.scalar(stmt) is not None:
        raise Conflict(f"A partner named {name!r} already exists", errors={"name": ["Already used by another partner."]})
    return name


def create_partner(session: Session, actor: User | None, data: dict) -> Partner:
    name = _check_partner_name(session, data.get("name", ""))
    partner = Partner(
        name=name,
        name_key=partner_key(name),
        website=data.get("website") or "",
        bio=data.get("bio") or "",
        contact=data.get("contact") or "",
    )
    session.add(partner)
    session.flush()
    audit.record(session, actor, "partner.created", "partner", partner.id)
    return partner


def update_partner(session: Session, actor: User | None, partner_id: int, changes: dict) -> Partner:
    partner = get_partner(session, partner_id)
    if "name" in changes:
        changes["name"] = _check_partner_name(session, changes["name"], exclude_id=partner.id)
        partner.name_key = partner_key(changes["name"])
    changed = sorted(k for k, v in changes.items() if getattr(partner, k) != v)
    for key in changed:
        setattr(partner, key, changes[key])
    if changed:
        audit.record(session, actor, "partner.updated", "partner", partner.id, {"fields": changed})
    return partner


def delete_partner(session: Session, actor: User | None, partner_id: int) -> None:
    """Articles keep their content and lose the credit (partner_id set to NULL)."""
    partner = get_partner(session, partner_id)
    for article in session.scalars(select(Article).where(Article.partner_id == partner.id)):
        article.partner_id = None
    session.delete(partner)
    audit.record(session, actor, "partner.deleted", "partner", partner_id)


def find_or_create_partner(session: Session, name: str) -> tuple[Partner, bool]:
    partner = session.scalar(select(Partner).where(Partner.name_key == partner_key(name)))
    if partner is not None:
        return partner, False
    partner = Partner(name=re.sub(r"\s+", " ", name).strip(), name_key=partner_key(name))
    session.add(partner)
    session.flush()
    return partner, True


# ---------------------------------------------------------------- articles


def get_article(session: Session, article_id: int) -> Article:
    article = session.get(Article, article_id)
    if article is None:
        raise NotFound(f"Article {article_id} not found")
    return article


def parse_if_match(header: str | None) -> int | None:
    """The version named by an If-Match header (``"3"``, ``W/"3"`` or ``3``); None when absent."""
    if header is None or not header.strip():
        return None
    value = header.split(",")[0].strip()
    if value == "*":
        return -1
    value = value.removeprefix("W/").strip('"')
    try:
        return int(value)
    except ValueError:
        raise PreconditionFailed(f"If-Match {header!r} names no version of this article") from None


def check_version(article: Article, expected: int | None) -> None:
    if expected is None:
        raise PreconditionRequired("Send If-Match with the ETag you read, so a concurrent edit is not overwritten.")
    if expected != -1 and expected != article.version:
        raise PreconditionFailed(
            f"The article changed since you read it (you sent version {expected}, it is now at version {article.version}); reload and reapply your edit."
        )


def _validate_publish_at(value: datetime | None) -> None:
    if value is not None and value.tzinfo is None:
        raise InvalidInput("publish_at needs a timezone", errors={"publish_at": ["Give a timezone offset, e.g. 2026-12-01T09:00:00Z."]})


def _record_revision(session: Session, article: Article, actor: User | None, change: str) -> ArticleRevision:
    revision = ArticleRevision(
        article_id=article.id,
        version=article.version,
        change=change[:300],
        title=article.title,
        summary=article.summary,
        source_format=article.source_format.value,
        body_source=article.body_source,
        body_html=article.body_html,
        status=article.status.value,
        partner_id=article.partner_id,
        topics=[t.name for t in article.topics],
        author_user_id=actor.id if actor else None,
        author_label=_actor_label(actor),
    )
    session.add(revision)
    return revision


def _set_body(article: Article, body: str, source_format: str) -> None:
    article.source_format = SourceFormat(source_format)
    article.body_source = body
    article.body_html, article.body_text, article.reading_minutes = article_content.render(body, source_format)


def _clean_title(title: str | None) -> str:
    title = re.sub(r"\s+", " ", title or "").strip()
    if not title:
        raise InvalidInput("Title required", errors={"title": ["Must not be empty."]})
    return title


def create_article(session: Session, actor: User | None, data: dict, *, fingerprint: str | None = None, change: str = "created") -> Article:
    if data.get("partner_id") is not None:
        _partner_or_invalid(session, data["partner_id"])
    _validate_publish_at(data.get("publish_at"))
    article = Article(
        title=_clean_title(data.get("title")),
        summary=(data.get("summary") or "").strip(),
        partner_id=data.get("partner_id"),
        publish_at=data.get("publish_at"),
        review_by=data.get("review_by"),
        fingerprint=fingerprint,
        created_by_id=actor.id if actor else None,
        status=ArticleStatus.DRAFT,
    )
    _set_body(article, data.get("body") or "", data.get("format") or "text")
    article.topics = resolve_topics(session, data.get("topics") or [])
    session.add(article)
    session.flush()
    _record_revision(session, article, actor, change)
    audit.record(session, actor, "article.created", "article", article.id)
    return article


def _partner_or_invalid(session: Session, partner_id: int) -> Partner:
    partner = session.get(Partner, partner_id)
    if partner is None:
        raise InvalidInput("Unknown partner", errors={"partner_id": [f"No partner {partner_id} in this organisation."]})
    return partner


_CONTENT_FIELDS = ("title", "summary", "body", "format", "partner_id", "topics", "publish_at", "review_by")


def update_article(session: Session, actor: User | None, article_id: int, changes: dict, expected_version: int | None) -> Article:
    """Apply ``changes`` if the caller read the current version (optimistic concurrency)."""
    article = get_article(session, article_id)
    check_version(article, expected_version)
    changed: list[str] = []
    if "title" in changes and _clean_title(changes["title"]) != article.title:
        article.title = _clean_title(changes["title"])
        changed.append("title")
    if "summary" in changes and (changes["summary"] or "").strip() != article.summary:
        article.summary = (changes["summary"] or "").strip()
        changed.append("summary")
    if "body" in changes or "format" in changes:
        body = changes.get("body", article.body_source)
        fmt = changes.get("format") or article.source_format.value
        if body != article.body_source or fmt != article.source_format.value:
            _set_body(article, body or "", fmt)
            changed.append("body")
    if "partner_id" in changes and changes["partner_id"] != article.partner_id:
        if changes["partner_id"] is not None:
            _partner_or_invalid(session, changes["partner_id"])
        article.partner_id = changes["partner_id"]
        changed.append("partner_id")
    if "topics" in changes:
        topics = resolve_topics(session, changes["topics"] or [])
        if [t.id for t in topics] != [t.id for t in article.topics]:
            article.topics = topics
            changed.append("topics")
    if "publish_at" in changes and changes["publish_at"] != article.publish_at:
        _validate_publish_at(changes["publish_at"])
        article.publish_at = changes["publish_at"]
        changed.append("publish_at")
    if "review_by" in changes and changes["review_by"] != article.review_by:
        article.review_by = changes["review_by"]
        changed.append("review_by")
    if not changed:
        return article
    article.updated_at = utcnow()
    _flush_versioned(session)
    _record_revision(session, article, actor, "updated: " + ", ".join(changed))
    audit.record(session, actor, "article.updated", "article", article.id, {"fields": changed})
    return article


def _flush_versioned(session: Session) -> None:
    try:
        session.flush()
    except StaleDataError:
        raise PreconditionFailed("The article was changed by someone else at the same moment; reload and reapply your edit.") from None


def delete_article(session: Session, actor: User | None, article_id: int) -> None:
    article = get_article(session, article_id)
    session.delete(article)
    audit.record(session, actor, "article.deleted", "article", article_id)


def transition(
    session: Session,
    actor: User | None,
    article_id: int,
    action: str,
    *,
    note: str = "",
    publish_at: datetime | None = None,
    expected_version: int | None = None,
    now: datetime | None = None,
) -> Article:
    """Move an article along ``draft -> review -> published -> archived`` (and back:
    reject to draft, restore from the archive to draft). ``publish`` with a future
    ``publish_at`` schedules it instead: the beat task publishes it when due."""
    if action not in TRANSITIONS:
        raise InvalidInput("Unknown action", errors={"action": [f"One of: {', '.join(TRANSITIONS)}."]})
    article = get_article(session, article_id)
    if expected_version is not None:
        check_version(article, expected_version)
    sources, target = TRANSITIONS[action]
    if article.status not in sources:
        allowed = ", ".join(sorted(s.value for s in sources))
        raise Conflict(
            f"Cannot {action} an article that is {article.status.value} (only from: {allowed}).",
            errors={"status": [f"Is {article.status.value}; {action} needs {allowed}."]},
        )
    now = now or utcnow()
    if action == "publish" and publish_at is not None:
        _validate_publish_at(publish_at)
        if publish_at > now:
            article.publish_at = publish_at
            article.updated_at = now
            _flush_versioned(session)
            _record_revision(session, article, actor, f"scheduled for {publish_at.isoformat()}")
            audit.record(session, actor, "article.scheduled", "article", article.id)
            return article
    previous = article.status
    article.status = target
    article.updated_at = now
    if target == ArticleStatus.PUBLISHED:
        article.published_at = now
        article.published_by_id = actor.id if actor else None
    session.add(
        ArticleTransition(
            article_id=article.id,
            from_status=previous.value,
            to_status=target.value,
            actor_user_id=actor.id if actor else None,
            actor_label=_actor_label(actor),
            note=(note or "")[:500],
            at=now,
        )
    )
    _flush_versioned(session)
    _record_revision(session, article, actor, action)
    audit.record(session, actor, f"article.{action}", "article", article.id, {"from": previous.value, "to": target.value})
    return article


def publish_due(session: Session, now: datetime | None = None) -> list[int]:
    """Publish this organisation's reviewed articles whose ``publish_at`` has come.
    Idempotent: a published article is no longer in review, so a rerun finds nothing."""
    now = now or utcnow()
    due = list(
        session.scalars(
            select(Article.id).where(Article.status == ArticleStatus.REVIEW, Article.publish_at.is_not(None), Article.publish_at <= now)
        )
    )
    published = []
    for article_id in due:
        try:
            with session.begin_nested():
                transition(session, None, article_id, "publish", note="scheduled publication", now=now)
            published.append(article_id)
        except (Conflict, PreconditionFailed):
            continue  # published (or changed) by someone else meanwhile
    return published


def orgs_with_due_articles(session: Session, now: datetime | None = None) -> list[int]:
    """Platform-wide: which organisations have articles due (for the beat task's fan-out)."""
    now = now or utcnow()
    with across_tenants(session):
        return list(
            session.scalars(
                select(Article.org_id)
                .where(Article.status == ArticleStatus.REVIEW, Article.publish_at.is_not(None), Article.publish_at <= now)
                .distinct()
            )
        )


def revisions(session: Session, article_id: int) -> list[ArticleRevision]:
    get_article(session, article_id)
    return list(session.scalars(select(ArticleRevision).where(ArticleRevision.article_id == article_id).order_by(ArticleRevision.version.desc())))


def transitions(session: Session, article_id: int) -> list[ArticleTransition]:
    get_article(session, article_id)
    return list(session.scalars(select(ArticleTransition).where(ArticleTransition.article_id == article_id).order_by(ArticleTransition.id)))


# ---------------------------------------------------------------- search

# Broad searches are bounded: one result list holds at most this many articles, the
# most recently updated matches, so a term found in half the library costs about what
# a rare one does. Beyond it ``total`` is a lower bound and pages stop.
SEARCH_RESULT_CAP = 1000
# Matches are looked for among the newest articles first: a window of this many times
# the cap, widened until it holds more than ``cap`` matches or is the whole library.
_FIRST_WINDOW = 4
# A window holding at most 1/16 of ``cap`` matches means a selective search, cheap to
# check across the whole library, so that is the next window.
_SELECTIVE = 16


@dataclass(frozen=True)
class SearchFilters:
    status: ArticleStatus | None = None
    topic: str | None = None
    partner_id: int | None = None
    date_from: date | None = None
    date_to: date | None = None


@dataclass(frozen=True)
class SearchResults(Page):
    """A page of search results. When ``total_is_exact`` is false more than ``total``
    articles match; only the ``total`` most recently updated of them are listed."""

    total_is_exact: bool = True


def _fts5_match(query: str) -> str | None:
    terms = re.findall(r"\w+", query.casefold())
    if not terms:
        return None
    # Each term quoted (no FTS5 syntax from users); the last one may be a prefix.
    quoted = [f'"{t}"' for t in terms[:-1]] + [f'"{terms[-1]}"*']
    return " ".join(quoted)


def _fts5_ranking(match: str):  # noqa: ANN202
    return (
        text("SELECT rowid AS rid, bm25(articles_fts, 10.0, 4.0, 1.0) AS rank FROM articles_fts WHERE articles_fts MATCH :fts_match")
        .bindparams(fts_match=match)
        .columns(rid=Integer, rank=Float)
        .subquery("fts")
    )


def _conditions(dialect: str, query: str, filters: SearchFilters) -> list:
    conditions = []
    if query:
        if dialect == "postgresql":
            conditions.append(Article.search_vector.op("@@")(func.websearch_to_tsquery("english", query)))
        else:
            match = _fts5_match(query)
            if match is None:
                conditions.append(false())
            else:
                matching = text("SELECT rowid FROM articles_fts WHERE articles_fts MATCH :fts_match").bindparams(fts_match=match)
                conditions.append(Article.id.in_(matching.columns(rowid=Integer)))
    if filters.status is not None:
        conditions.append(Article.status == filters.status)
    if filters.partner_id is not None:
        conditions.append(Article.partner_id == filters.partner_id)
    if filters.topic:
        conditions.append(Article.topics.any(Topic.slug == slugify_topic(filters.topic)))
    when = func.coalesce(Article.published_at, Article.created_at)
    if filters.date_from is not None:
        conditions.append(when >= datetime.combine(filters.date_from, datetime.min.time(), tzinfo=timezone.utc))
    if filters.date_to is not None:
        conditions.append(when < datetime.combine(filters.date_to, datetime.min.time(), tzinfo=timezone.utc) + _ONE_DAY)
    return conditions


def _window_bound(session: Session, window: int) -> datetime | None:
    """``updated_at`` of the ``window``-th most recently updated article (None when
    there are fewer): an index-only scan of ``ix_articles_org_id_updated_at``."""
    return session.scalar(select(Article.updated_at).order_by(Article.updated_at.desc(), Article.id.desc()).offset(window - 1).limit(1))


def _ranked_page(dialect: str, query: str, conditions: list, oldest_in_window: datetime | None, cap: int, offset: int, per_page: int) -> Select:
    """One statement for one window: how many of its articles meet ``conditions`` (up
    to ``cap + 1``), and the requested page of the ``cap`` newest of them in result order.

    The window's matches are a materialised CTE without ORDER BY or LIMIT on purpose:
    PostgreSQL then ANDs the full-text and the recency index bitmaps, where a LIMIT
    would tempt it into walking an index and unpacking each row's TOASTed tsvector to
    test it. When the window may still be widened the page is only ranked if the
    window holds more than ``cap`` matches (a one-time filter), so a window that turns
    out too small costs no ranking."""
    in_window = select(Article.id, Article.updated_at).where(*conditions)
    if oldest_in_window is not None:
        in_window = in_window.where(Article.updated_at >= oldest_in_window)
    matches = in_window.cte("window_matches").prefix_with("MATERIALIZED")
    # One more than the cap tells whether there are more.
    newest = select(matches.c.id, matches.c.updated_at).order_by(matches.c.updated_at.desc(), matches.c.id.desc()).limit(cap + 1).cte("newest_matches")
    found = select(func.count().label("found")).select_from(newest).subquery("found")
    candidates = select(newest.c.id, newest.c.updated_at).order_by(newest.c.updated_at.desc(), newest.c.id.desc()).limit(cap).subquery("candidates")

    fts_match = _fts5_match(query) if query and dialect != "postgresql" else None
    if query and dialect == "postgresql":
        order = (func.ts_rank_cd(Article.search_vector, func.websearch_to_tsquery("english", query)).desc(), candidates.c.id.desc())
        ranked = select(candidates.c.id).join(Article, Article.id == candidates.c.id)
    elif fts_match is not None:
        fts = _fts5_ranking(fts_match)
        order = (fts.c.rank, candidates.c.id.desc())
        ranked = select(candidates.c.id).join(fts, fts.c.rid == candidates.c.id)
    else:
        # No query, or (SQLite) one without a searchable term, which matches nothing.
        order = (candidates.c.updated_at.desc(), candidates.c.id.desc())
        ranked = select(candidates.c.id)
    ranked = ranked.add_columns(func.row_number().over(order_by=order).label("position"))
    if oldest_in_window is not None:
        ranked = ranked.where(select(func.count()).select_from(newest).scalar_subquery() > cap)
    page = ranked.order_by(*order).limit(per_page).offset(offset).subquery("page")
    return (
        select(found.c.found, Article)
        .select_from(found)
        .outerjoin(page, true())
        .outerjoin(Article, Article.id == page.c.id)
        .order_by(page.c.position)
    )


def search_articles(
    session: Session,
    query: str | None,
    filters: SearchFilters | None = None,
    page: int = 1,
    per_page: int = 20,
    *,
    cap: int = SEARCH_RESULT_CAP,
) -> SearchResults:
    """Full-text search over title, summary and body plus filters, paginated; with a
    query ranked by relevance (PostgreSQL: weighted tsvector, GIN index, ``ts_rank_cd``;
    SQLite: FTS5 with BM25 weights), without one newest first.

    At most ``cap`` articles are listed: when more match, the ``cap`` most recently
    updated matches are the ones ranked, ``total`` is ``cap`` and ``total_is_exact`` is
    false, and a page past them is refused (:class:`InvalidInput`): refine the search.

    Matches are looked for in a window of the newest articles first, widened only while
    it holds ``cap`` matches or fewer, so a common term reads a few thousand rows
    rather than every match. Each window is one statement (count and ranked page)."""
    filters = filters or SearchFilters()
    query = (query or "").strip()
    dialect = session.get_bind().dialect.name
    conditions = _conditions(dialect, query, filters)
    # Without the values the planner cannot tell a common term from a rare one or a
    # narrow window from a wide one, and its generic plan reads every match (8,003 heap
    # pages instead of 730 for a term in 41% of 50,000 articles).
    plan_with_values(session)
    offset = (page - 1) * per_page
    window: int | None = _FIRST_WINDOW * cap
    while True:
        oldest_in_window = None if window is None else _window_bound(session, window)
        rows = session.execute(_ranked_page(dialect, query, conditions, oldest_in_window, cap, offset, per_page)).all()
        found = rows[0].found
        # Every article outside the window is older than every one inside it, so
        # more than ``cap`` matches inside means the newest ``cap`` overall are there.
        if found > cap or oldest_in_window is None:
            break
        # Next, a window expected to hold about 1.5 x ``cap`` matches at the density seen.
        window = None if found * _SELECTIVE <= cap else int(window * 1.5 * (cap + 1) / found)
    exact = found <= cap
    total = min(found, cap)
    if offset >= total and not exact:
        raise InvalidInput(
            f"Broad searches list at most {cap:,} articles (the most recently updated matches); refine the search to see others.",
            errors={"page": [f"Pages stop after {cap:,} results."]},
        )
    return SearchResults(items=[row.Article for row in rows if row.Article is not None], page=page, per_page=per_page, total=total, total_is_exact=exact)


_ONE_DAY = timedelta(days=1)


# ---------------------------------------------------------------- what employees see


def articles_for_employees(session: Session, *, topics: list[str] | None = None, today: date | None = None, limit: int | None = None) -> list[Article]:
    """Articles that may reach employees (digests): published, and not past their
    ``review_by`` date (stale health content leaves digests until re-approved).
    Newest first; ``topics`` (names or slugs) narrows to articles with any of them."""
    today = today or utcnow().date()
    stmt = (
        select(Article)
        .where(Article.status == ArticleStatus.PUBLISHED, or_(Article.review_by.is_(None), Article.review_by >= today))
        .order_by(Article.published_at.desc(), Article.id.desc())
    )
    if topics:
        stmt = stmt.where(Article.topics.any(Topic.slug.in_([slugify_topic(t) for t in topics])))
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


@lru_cache(maxsize=8)
def article_signer(secret_key: str) -> security.LinkSigner:
    return security.LinkSigner(secret_key, ARTICLE_LINK_PURPOSE)


def article_link_token(secret_key: str, org_id: int, article_id: int, employee_id: int | None = None) -> str:
    payload = {"o": org_id, "a": article_id}
    if employee_id is not None:
        payload["e"] = employee_id
    return article_signer(secret_key).sign(payload)


def article_link(public_url: str, secret_key: str, org_id: int, article_id: int, employee_id: int | None = None) -> str:
    return f"{public_url.rstrip('/')}/a/{article_link_token(secret_key, org_id, article_id, employee_id)}"


@dataclass(frozen=True)
class ArticleLink:
    org_id: int
    article_id: int
    employee_id: int | None


def read_article_link(secret_key: str, token: str) -> ArticleLink | None:
    payload = article_signer(secret_key).verify(token, ARTICLE_LINK_MAX_AGE_SECONDS)
    if not isinstance(payload, dict) or not isinstance(payload.get("o"), int) or not isinstance(payload.get("a"), int):
        return None
    employee = payload.get("e")
    return ArticleLink(payload["o"], payload["a"], employee if isinstance(employee, int) else None)


def published_article(session: Session, article_id: int) -> Article:
    """An article as employees may see it: published, or not found."""
    article = session.get(Article, article_id)
    if article is None or article.status != ArticleStatus.PUBLISHED:
        raise NotFound("This article is not available.")
    return article


def disclosure(article: Article, organisation: Organisation) -> str:
    if article.partner is not None:
        return f"Written by {article.partner.name}. Shared by {organisation.name} from a wellbeing partner."
    return f"Shared by {organisation.name}."


# ---------------------------------------------------------------- import


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


def check_upload(upload: Upload) -> tuple[str, str]:
    """(format, decoded text) of an upload, or the 413/415/422 error naming the file."""
    name = Path(upload.filename or "").name or "(unnamed)"
    suffix = Path(name).suffix.casefold()
    if suffix not in IMPORT_EXTENSIONS:
        raise UnsupportedMediaType(
            f"{name}: only .txt, .md and .html files can be imported.",
            errors={f"files.{name}": ["Unsupported file type; use .txt, .md or .html."]},
        )
    if len(upload.data) > MAX_IMPORT_BYTES:
        raise PayloadTooLarge(
            f"{name} is {len(upload.data)} bytes; the limit is {MAX_IMPORT_BYTES} bytes (2 MB) per file.",
            errors={f"files.{name}": ["Larger than 2 MB."]},
        )
    try:
        decoded = upload.data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InvalidInput(
            f"{name} is not valid UTF-8 (byte {error.start}); save it as UTF-8 and try again.",
            errors={f"files.{name}": ["Not valid UTF-8."]},
        ) from None
    if "\x00" in decoded:
        raise InvalidInput(f"{name} contains NUL bytes; it is not a text file.", errors={f"files.{name}": ["Not a text file."]})
    if not decoded.strip():
        raise InvalidInput(f"{name} is empty.", errors={f"files.{name}": ["Empty file."]})
    return IMPORT_EXTENSIONS[suffix], decoded


def import_files(session: Session, actor: User | None, uploads: list[Upload]) -> list[dict]:
    """Import every file or none: all are checked before any is imported."""
    if not uploads:
        raise InvalidInput("No files", errors={"files": ["Attach one or more .txt, .md or .html files."]})
    checked = [(u, *check_upload(u)) for u in uploads]
    return [import_document(session, actor, Path(u.filename).name, fmt, decoded) for u, fmt, decoded in checked]


def import_document(session: Session, actor: User | None, filename: str, source_format: str, decoded: str) -> dict:
    """Create a draft from one document (or find the one imported before) and report what was recognised."""
    found = article_import.recognise(decoded, source_format)
    report = {
        "filename": filename,
        "format": source_format,
        "title": found.title,
        "title_proposed": found.title_proposed,
        "summary": found.summary,
        "attribution": found.attribution,
        "partner": None,
        "bio_found": bool(found.bio),
        "sections": len(found.sections),
        "headings": found.headings,
        "headings_proposed": found.headings_proposed,
        "captions": found.captions,
        "dropped_boilerplate": found.dropped_boilerplate,
        "suggested_topics": [],
        "duplicate": False,
        "article_id": None,
    }
    existing = session.scalar(select(Article).where(Article.fingerprint == found.fingerprint))
    if existing is not None:
        report.update(
            duplicate=True,
            article_id=existing.id,
            title=existing.title,
            suggested_topics=[t.name for t in existing.topics],
            partner={"id": existing.partner.id, "name": existing.partner.name, "created": False} if existing.partner else None,
        )
        return report
    partner = None
    if found.partner_name:
        partner, created = find_or_create_partner(session, found.partner_name)
        if found.bio and not partner.bio:
            partner.bio = found.bio
        report["partner"] = {"id": partner.id, "name": partner.name, "created": created}
    body_html, body_text, _ = article_content.render(found.body_source, found.body_format)
    topics = suggest_topics(session, body_text, title=found.title, summary=found.summary)
    article = create_article(
        session,
        actor,
        {
            "title": found.title,
            "summary": found.summary,
            "body": found.body_source,
            "format": found.body_format,
            "partner_id": partner.id if partner else None,
            "topics": topics,
        },
        fingerprint=found.fingerprint,
        change=f"imported from {filename}",
    )
    report.update(article_id=article.id, suggested_topics=topics)
    return report


def seed_example_article(session: Session, org_id: int) -> dict:
    """The shipped example partner article, imported into ``org_id`` through the
    importer; idempotent (a second call finds it by fingerprint). Works on an
    unscoped session too: it is bound to ``org_id`` for the import."""
    info = session.info
    previous = (info.get("org_id"), info.get("unscoped", False))
    info["org_id"], info["unscoped"] = org_id, False
    try:
        report = import_files(session, None, [Upload(EXAMPLE_ARTICLE.name, EXAMPLE_ARTICLE.read_bytes())])[0]
        session.flush()
    finally:
        info["org_id"], info["unscoped"] = previous
    return report
