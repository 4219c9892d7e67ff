"""employees: drop ix_employees_org_id, redundant with the indexes that lead with org_id

Every employees query the tenant guard produces filters on org_id; the unique indexes
(org_id, email) and (org_id, external_id) and the index (org_id, status) all serve it,
so the single-column index only cost a write per inserted row (the CSV import writes
many).

Revision ID: 0007_import
Revises: 0006_merge
"""
from alembic import op

revision = "0007_import"
down_revision = "0006_merge"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_employees_org_id", table_name="employees")


def downgrade() -> None:
    op.create_index("ix_employees_org_id", "employees", ["org_id"], unique=False)
