"""Tables only the report build writes lose their foreign key to organisations and the
indexes nothing reads through: report_person_weeks, report_cells, report_headcounts.

A full build writes about a million weekly summaries and half a million cells; the
per-row foreign-key check on org_id took about a third of writing them, and the org_id
index (the leading column of another index on each table) and report_cells' (org_id,
iso_week) index (every read names the window too) were kept up for nothing. Erasure's
look-up of a person's summaries by pseudonym uses a hash index on PostgreSQL (a b-tree
on 64-character HMACs cost more than the rest of the row's upkeep).

Revision ID: 0011_report_tables_lean
Revises: 0010_search_vector_inline
"""
from __future__ import annotations

from alembic import op

revision = "0011_report_tables_lean"
down_revision = "0010_search_vector_inline"
branch_labels = None
depends_on = None

TABLES = ("report_person_weeks", "report_cells", "report_headcounts")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"fk_{table}_org_id_organisations", type_="foreignkey")
            batch.drop_index(f"ix_{table}_org_id")
    op.drop_index("ix_report_cells_org_id_iso_week", table_name="report_cells")
    op.drop_index("ix_report_person_weeks_org_id_pseudonym", table_name="report_person_weeks")
    op.create_index("ix_report_person_weeks_pseudonym", "report_person_weeks", ["pseudonym"], postgresql_using="hash")


def downgrade() -> None:
    op.drop_index("ix_report_person_weeks_pseudonym", table_name="report_person_weeks")
    op.create_index("ix_report_person_weeks_org_id_pseudonym", "report_person_weeks", ["org_id", "pseudonym"])
    op.create_index("ix_report_cells_org_id_iso_week", "report_cells", ["org_id", "iso_week"])
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.create_index(f"ix_{table}_org_id", ["org_id"])
            batch.create_foreign_key(f"fk_{table}_org_id_organisations", "organisations", ["org_id"], ["id"], ondelete="CASCADE")
