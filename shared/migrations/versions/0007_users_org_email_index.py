"""users: index (org_id, email) for the user list's order

Revision ID: 0007_users_org_email
Revises: 0006_merge
"""
from alembic import op

revision = "0007_users_org_email"
down_revision = "0006_merge"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_users_org_id_email", "users", ["org_id", "email"])


def downgrade() -> None:
    op.drop_index("ix_users_org_id_email", table_name="users")
