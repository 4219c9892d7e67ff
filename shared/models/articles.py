"""Partner articles: partners, the topic vocabulary, articles, their revisions and
workflow transitions."""
from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import (
    JSON,
    Column,
    Date,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Mapped, deferred, mapped_column, relationship

from shared.db import Base, TenantOwned, utcnow


class ArticleStatus(str, enum.Enum):
    DRAFT = "draft"
    REVIEW = "review"
    PUBLISHED = "published"
    ARCHIVED = "archived"


class SourceFormat(str, enum.Enum):
    TEXT = "text"
    MARKDOWN = "markdown"
    HTML = "html"


class SearchVector(TypeDecorator):
    """``tsvector`` on PostgreSQL (kept up to date by a trigger the migration creates);
    an unused nullable text column elsewhere (SQLite searches its FTS5 table)."""

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect):  # noqa: ANN001
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TSVECTOR())
        return dialect.type_descriptor(Text())


class Partner(TenantOwned, Base):
    """A content provider whose articles the organisation shares."""

    __tablename__ = "partners"
    __table_args__ = (UniqueConstraint("org_id", "name_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # Lower-cased, whitespace-collapsed name: partners are matched case-insensitively.
    name_key: Mapped[str] = mapped_column(String(200))
    website: Mapped[str] = mapped_column(String(500), default="", server_default="")
    bio: Mapped[str] = mapped_column(Text, default="", server_default="")
    contact: Mapped[str] = mapped_column(String(300), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now(), onupdate=utcnow)


class Topic(TenantOwned, Base):
    """One term of the organisation's controlled topic vocabulary."""

    __tablename__ = "topics"
    __table_args__ = (UniqueConstraint("org_id", "slug"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    slug: Mapped[str] = mapped_column(String(80))
    # Words and phrases whose occurrences suggest this topic for an article.
    keywords: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


article_topics = Table(
    "article_topics",
    Base.metadata,
    Column("article_id", Integer, ForeignKey("articles.id", ondelete="CASCADE"), primary_key=True),
    Column("topic_id", Integer, ForeignKey("topics.id", ondelete="CASCADE"), primary_key=True, index=True),
)


_status_enum = Enum(ArticleStatus, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e], name="article_status")
_format_enum = Enum(SourceFormat, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e], name="source_format")


class Article(TenantOwned, Base):
    __tablename__ = "articles"
    __table_args__ = (
        # Importing the same file twice finds the first import (NULL for articles typed in).
        UniqueConstraint("org_id", "fingerprint"),
        Index("ix_articles_search_vector", "search_vector", postgresql_using="gin"),
        Index("ix_articles_org_id_status", "org_id", "status"),
        # Newest first: lists without a query, and the recency windows of search.
        Index("ix_articles_org_id_updated_at", "org_id", "updated_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(300))
    summary: Mapped[str] = mapped_column(Text, default="", server_default="")
    source_format: Mapped[SourceFormat] = mapped_column(_format_enum)
    # The body as the admin (or the import) gave it; body_html is what is rendered.
    body_source: Mapped[str] = mapped_column(Text, default="", server_default="")
    body_html: Mapped[str] = mapped_column(Text, default="", server_default="")
    body_text: Mapped[str] = mapped_column(Text, default="", server_default="")
    reading_minutes: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    partner_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id", ondelete="SET NULL"), index=True)
    status: Mapped[ArticleStatus] = mapped_column(_status_enum, default=ArticleStatus.DRAFT, server_default="draft")
    publish_at: Mapped[datetime | None] = mapped_column(index=True)
    review_by: Mapped[date | None] = mapped_column(Date)
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    published_at: Mapped[datetime | None]
    published_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    search_vector = deferred(mapped_column(SearchVector, nullable=True))

    partner: Mapped[Partner | None] = relationship(lazy="joined")
    topics: Mapped[list[Topic]] = relationship(secondary=article_topics, lazy="selectin", order_by=Topic.name)

    # Optimistic concurrency: every UPDATE checks and bumps the version, so two
    # admins saving the same version cannot both win.
    __mapper_args__ = {"version_id_col": version}


class ArticleRevision(TenantOwned, Base):
    """The article's content as of one version, with who made it and when."""

    __tablename__ = "article_revisions"
    __table_args__ = (UniqueConstraint("article_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    change: Mapped[str] = mapped_column(String(300))
    title: Mapped[str] = mapped_column(String(300))
    summary: Mapped[str] = mapped_column(Text)
    source_format: Mapped[str] = mapped_column(String(20))
    body_source: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))
    partner_id: Mapped[int | None]
    topics: Mapped[list] = mapped_column(JSON, default=list)
    author_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    author_label: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class ArticleTransition(TenantOwned, Base):
    """One workflow step (draft -> review -> published -> archived and back) with who/when."""

    __tablename__ = "article_transitions"

    id: Mapped[int] = mapped_column(primary_key=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"), index=True)
    from_status: Mapped[str] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    actor_label: Mapped[str] = mapped_column(String(80))
    note: Mapped[str] = mapped_column(String(500), default="", server_default="")
    at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
