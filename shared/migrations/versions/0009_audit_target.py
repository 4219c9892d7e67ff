"""audit_events: index a subject's history; drop the indexes no query uses

The employee page reads one employee's audit history (org_id, target_type, target_id):
with only ix_audit_events_org_id and ix_audit_events_at that read scanned every audit
row (24 ms after one 100,000-row import, growing with each import). The new index
leads with org_id, so ix_audit_events_org_id is redundant; no query filters or orders
the trail by time alone, so ix_audit_events_at only cost a write per row (the CSV
import writes one row per employee).

Revision ID: 0009_audit_target
Revises: 0008_merge
"""
from alembic import op

revision = "0009_audit_target"
down_revision = "0008_merge"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_events_org_id_target_type_target_id", "audit_events", ["org_id", "target_type", "target_id"], unique=False)
    op.drop_index("ix_audit_events_org_id", table_name="audit_events")
    op.drop_index("ix_audit_events_at", table_name="audit_events")


def downgrade() -> None:
    op.create_index("ix_audit_events_at", "audit_events", ["at"], unique=False)
    op.create_index("ix_audit_events_org_id", "audit_events", ["org_id"], unique=False)
    op.drop_index("ix_audit_events_org_id_target_type_target_id", table_name="audit_events")
