"""articles: index for newest-first article lists and bounded broad searches

Revision ID: 0007_search
Revises: 0006_merge

``search_articles`` looks for matches among an organisation's most recently updated
articles first (window bounds from an index-only scan, then a bitmap AND with the
full-text index), and lists without a query are ordered the same way.
"""
from alembic import op

revision = "0007_search"
down_revision = "0006_merge"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_articles_org_id_updated_at", "articles", ["org_id", "updated_at", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_articles_org_id_updated_at", table_name="articles")
