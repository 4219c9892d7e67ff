"""articles: partners, topics, articles, revisions, transitions, full-text search

Revision ID: 0002_articles
Revises: 0001_foundation
Create Date: 2026-11-25 12:10:00

PostgreSQL: ``articles.search_vector`` is a weighted tsvector (title A, summary B,
body C) kept current by a trigger, with a GIN index.
SQLite: an external-content FTS5 table ``articles_fts`` kept in sync by triggers;
``search_vector`` exists (the model is the same) but stays NULL.
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


revision = "0002_articles"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None


def _is_postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    pg = _is_postgresql()
    op.create_table(
        "partners",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("name_key", sa.String(length=200), nullable=False),
        sa.Column("website", sa.String(length=500), server_default="", nullable=False),
        sa.Column("bio", sa.Text(), server_default="", nullable=False),
        sa.Column("contact", sa.String(length=300), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organisations.id"], name=op.f("fk_partners_org_id_organisations"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_partners")),
        sa.UniqueConstraint("org_id", "name_key", name=op.f("uq_partners_org_id_name_key")),
    )
    op.create_index(op.f("ix_partners_org_id"), "partners", ["org_id"], unique=False)

    op.create_table(
        "topics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("slug", sa.String(length=80), nullable=False),
        sa.Column("keywords", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organisations.id"], name=op.f("fk_topics_org_id_organisations"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_topics")),
        sa.UniqueConstraint("org_id", "slug", name=op.f("uq_topics_org_id_slug")),
    )
    op.create_index(op.f("ix_topics_org_id"), "topics", ["org_id"], unique=False)

    op.create_table(
        "articles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("summary", sa.Text(), server_default="", nullable=False),
        sa.Column("source_format", sa.Enum("text", "markdown", "html", name="source_format", native_enum=False, length=20), nullable=False),
        sa.Column("body_source", sa.Text(), server_default="", nullable=False),
        sa.Column("body_html", sa.Text(), server_default="", nullable=False),
        sa.Column("body_text", sa.Text(), server_default="", nullable=False),
        sa.Column("reading_minutes", sa.Integer(), server_default="1", nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=True),
        sa.Column(
            "status",
            sa.Enum("draft", "review", "published", "archived", name="article_status", native_enum=False, length=20),
            server_default="draft",
            nullable=False,
        ),
        sa.Column("publish_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("review_by", sa.Date(), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("published_by_id", sa.Integer(), nullable=True),
        sa.Column("search_vector", postgresql.TSVECTOR() if pg else sa.Text(), nullable=True),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["created_by_id"], ["users.id"], name=op.f("fk_articles_created_by_id_users"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["org_id"], ["organisations.id"], name=op.f("fk_articles_org_id_organisations"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"], name=op.f("fk_articles_partner_id_partners"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["published_by_id"], ["users.id"], name=op.f("fk_articles_published_by_id_users"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_articles")),
        sa.UniqueConstraint("org_id", "fingerprint", name=op.f("uq_articles_org_id_fingerprint")),
    )
    op.create_index(op.f("ix_articles_org_id"), "articles", ["org_id"], unique=False)
    op.create_index(op.f("ix_articles_partner_id"), "articles", ["partner_id"], unique=False)
    op.create_index(op.f("ix_articles_publish_at"), "articles", ["publish_at"], unique=False)
    op.create_index("ix_articles_org_id_status", "articles", ["org_id", "status"], unique=False)
    op.create_index("ix_articles_search_vector", "articles", ["search_vector"], unique=False, postgresql_using="gin")

    op.create_table(
        "article_topics",
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.Column("topic_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["article_id"], ["articles.id"], name=op.f("fk_article_topics_article_id_articles"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["topic_id"], ["topics.id"], name=op.f("fk_article_topics_topic_id_topics"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("article_id", "topic_id", name=op.f("pk_article_topics")),
    )
    op.create_index(op.f("ix_article_topics_topic_id"), "article_topics", ["topic_id"], unique=False)

    op.create_table(
        "article_revisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("change", sa.String(length=300), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("source_format", sa.String(length=20), nullable=False),
        sa.Column("body_source", sa.Text(), nullable=False),
        sa.Column("body_html", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=True),
        sa.Column("topics", sa.JSON(), nullable=False),
        sa.Column("author_user_id", sa.Integer(), nullable=True),
        sa.Column("author_label", sa.String(length=80), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["article_id"], ["articles.id"], name=op.f("fk_article_revisions_article_id_articles"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["author_user_id"], ["users.id"], name=op.f("fk_article_revisions_author_user_id_users"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["org_id"], ["organisations.id"], name=op.f("fk_article_revisions_org_id_organisations"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_article_revisions")),
        sa.UniqueConstraint("article_id", "version", name=op.f("uq_article_revisions_article_id_version")),
    )
    op.create_index(op.f("ix_article_revisions_org_id"), "article_revisions", ["org_id"], unique=False)

    op.create_table(
        "article_transitions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.Column("from_status", sa.String(length=20), nullable=False),
        sa.Column("to_status", sa.String(length=20), nullable=False),
        sa.Column("actor_user_id", sa.Integer(), nullable=True),
        sa.Column("actor_label", sa.String(length=80), nullable=False),
        sa.Column("note", sa.String(length=500), server_default="", nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["actor_user_id"], ["users.id"], name=op.f("fk_article_transitions_actor_user_id_users"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["article_id"], ["articles.id"], name=op.f("fk_article_transitions_article_id_articles"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["org_id"], ["organisations.id"], name=op.f("fk_article_transitions_org_id_organisations"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_article_transitions")),
    )
    op.create_index(op.f("ix_article_transitions_article_id"), "article_transitions", ["article_id"], unique=False)
    op.create_index(op.f("ix_article_transitions_org_id"), "article_transitions", ["org_id"], unique=False)

    if pg:
        op.execute(
            """
            CREATE FUNCTION articles_search_vector_update() RETURNS trigger AS $$
            BEGIN
              NEW.search_vector :=
                setweight(to_tsvector('english', coalesce(NEW.title, '')), 'A') ||
                setweight(to_tsvector('english', coalesce(NEW.summary, '')), 'B') ||
                setweight(to_tsvector('english', coalesce(NEW.body_text, '')), 'C');
              RETURN NEW;
            END
            $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            """
            CREATE TRIGGER articles_search_vector_trigger
            BEFORE INSERT OR UPDATE OF title, summary, body_text ON articles
            FOR EACH ROW EXECUTE FUNCTION articles_search_vector_update()
            """
        )
    else:
        op.execute(
            "CREATE VIRTUAL TABLE articles_fts USING fts5("
            "title, summary, body_text, content='articles', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2')"
        )
        op.execute(
            """
            CREATE TRIGGER articles_fts_insert AFTER INSERT ON articles BEGIN
              INSERT INTO articles_fts(rowid, title, summary, body_text) VALUES (new.id, new.title, new.summary, new.body_text);
            END
            """
        )
        op.execute(
            """
            CREATE TRIGGER articles_fts_delete AFTER DELETE ON articles BEGIN
              INSERT INTO articles_fts(articles_fts, rowid, title, summary, body_text) VALUES ('delete', old.id, old.title, old.summary, old.body_text);
            END
            """
        )
        op.execute(
            """
            CREATE TRIGGER articles_fts_update AFTER UPDATE OF title, summary, body_text ON articles BEGIN
              INSERT INTO articles_fts(articles_fts, rowid, title, summary, body_text) VALUES ('delete', old.id, old.title, old.summary, old.body_text);
              INSERT INTO articles_fts(rowid, title, summary, body_text) VALUES (new.id, new.title, new.summary, new.body_text);
            END
            """
        )


def downgrade() -> None:
    if _is_postgresql():
        op.execute("DROP TRIGGER IF EXISTS articles_search_vector_trigger ON articles")
        op.execute("DROP FUNCTION IF EXISTS articles_search_vector_update()")
    else:
        for name in ("articles_fts_insert", "articles_fts_delete", "articles_fts_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS articles_fts")
    op.drop_table("article_transitions")
    op.drop_table("article_revisions")
    op.drop_table("article_topics")
    op.drop_table("articles")
    op.drop_table("topics")
    op.drop_table("partners")
