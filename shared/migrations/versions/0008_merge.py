"""merge the search, users index, import, program sessions and reports branches into one head

Revision ID: 0008_merge
Revises: 0007_search, 0007_users_org_email, 0007_import, 0007_program_sessions, 0007_reports
"""

revision = "0008_merge"
down_revision = ("0007_search", "0007_users_org_email", "0007_import", "0007_program_sessions", "0007_reports")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
