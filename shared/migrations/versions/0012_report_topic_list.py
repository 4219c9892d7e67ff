"""The report build's aggregate of a person-week's topics (PostgreSQL): report_topic_list.

``json_agg``'s state is an internal type, for which the planner counts about 8 kB per
group: the summary pass's GROUP BY per person-week (a million groups with everyone active
every week) was planned in batches spilled to disk whatever memory it was given. This
aggregate concatenates text with the built-in ``textcat`` (strict: NULL inputs are
skipped), a text state the planner sizes as text, so the GROUP BY hashes in memory.

Revision ID: 0012_report_topic_list
Revises: 0011_report_tables_lean
"""
from __future__ import annotations

from alembic import op

revision = "0012_report_topic_list"
down_revision = "0011_report_tables_lean"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("CREATE AGGREGATE report_topic_list(text) (SFUNC = textcat, STYPE = text)")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP AGGREGATE report_topic_list(text)")
