"""Article search vectors stored inline (STORAGE MAIN, LZ4) on PostgreSQL.

Ranking a broad search reads the search vectors of up to a thousand candidates. With
the default storage a vector of a few kilobytes is moved out of line to the TOAST table,
so each one cost an index look-up and several chunk reads there: about two thirds of
the ranking's time for a common term. MAIN keeps it compressed in the row (out of line
only when the row would not fit a page, the long bodies going first); LZ4 decompresses
faster than pglz. The heap roughly doubles, the TOAST table shrinks by as much.

Values written before this migration keep their storage until the row is rewritten.

Revision ID: 0010_search_vector_inline
Revises: 0009_audit_target
"""
from __future__ import annotations

from alembic import op

revision = "0010_search_vector_inline"
down_revision = "0009_audit_target"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE articles ALTER COLUMN search_vector SET STORAGE MAIN, ALTER COLUMN search_vector SET COMPRESSION lz4")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE articles ALTER COLUMN search_vector SET STORAGE EXTENDED, ALTER COLUMN search_vector SET COMPRESSION pglz")
