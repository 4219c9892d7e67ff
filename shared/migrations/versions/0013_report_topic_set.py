"""The report build's aggregate of a person-week's topics (PostgreSQL): report_topic_set
replaces report_topic_list.

The summary pass used to group the events twice (per topic read, then per person-week) only
to list each topic once without a DISTINCT aggregate, which would sort every event. Now one
GROUP BY per person-week collects the topics with ``report_topic_set``: the built-in
``jsonb_concat`` (strict: NULL inputs are skipped) merges one-key objects, so a topic read
twice is kept once. Its state is jsonb, which the planner sizes as a value, so the GROUP BY
still hashes in memory (see 0012 for json_agg's internal state).

Revision ID: 0013_report_topic_set
Revises: 0012_report_topic_list
"""
from __future__ import annotations

from alembic import op

revision = "0013_report_topic_set"
down_revision = "0012_report_topic_list"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("CREATE AGGREGATE report_topic_set(jsonb) (SFUNC = jsonb_concat, STYPE = jsonb)")
        op.execute("DROP AGGREGATE report_topic_list(text)")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("CREATE AGGREGATE report_topic_list(text) (SFUNC = textcat, STYPE = text)")
        op.execute("DROP AGGREGATE report_topic_set(jsonb)")
