"""merge the digests and activity branches into one head

Revision ID: 0006_merge
Revises: 0004_digests, 0005_activity
"""

revision = "0006_merge"
down_revision = ("0004_digests", "0005_activity")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
