"""digests: settings, runs, sends (one per employee and ISO week), items, suppressions, pulse answers

Revision ID: 0004_digests
Revises: 0002_articles, 0003_employees
"""
from alembic import op
import sqlalchemy as sa


revision = "0004_digests"
down_revision = ("0002_articles", "0003_employees")
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('digest_settings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('send_weekdays', sa.JSON(), nullable=False),
    sa.Column('window_start_hour', sa.Integer(), server_default='0', nullable=False),
    sa.Column('window_end_hour', sa.Integer(), server_default='24', nullable=False),
    sa.Column('quiet_days', sa.JSON(), nullable=False),
    sa.Column('paused', sa.Boolean(), server_default='0', nullable=False),
    sa.Column('rate_per_second', sa.Integer(), server_default='50', nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_digest_settings_org_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_digest_settings')),
    sa.UniqueConstraint('org_id', name='uq_digest_settings_org_id')
    )
    op.create_index(op.f('ix_digest_settings_org_id'), 'digest_settings', ['org_id'], unique=False)
    op.create_table('digest_suppressions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('hard_failures', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_error', sa.String(length=1000), nullable=True),
    sa.Column('suppressed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_digest_suppressions_org_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_digest_suppressions')),
    sa.UniqueConstraint('org_id', 'email', name='uq_digest_suppressions_org_id_email')
    )
    op.create_index(op.f('ix_digest_suppressions_org_id'), 'digest_suppressions', ['org_id'], unique=False)
    op.create_table('digest_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('iso_week', sa.String(length=8), nullable=False),
    sa.Column('trigger', sa.Enum('schedule', 'manual', name='digest_run_trigger', native_enum=False, length=10), nullable=False),
    sa.Column('schedule_key', sa.String(length=40), nullable=True),
    sa.Column('started_by_user_id', sa.Integer(), nullable=True),
    sa.Column('created_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_digest_runs_org_id_organisations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['started_by_user_id'], ['users.id'], name=op.f('fk_digest_runs_started_by_user_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_digest_runs')),
    sa.UniqueConstraint('schedule_key', name='uq_digest_runs_schedule_key')
    )
    op.create_index(op.f('ix_digest_runs_iso_week'), 'digest_runs', ['iso_week'], unique=False)
    op.create_index(op.f('ix_digest_runs_org_id'), 'digest_runs', ['org_id'], unique=False)
    op.create_table('pulse_responses',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('employee_id', sa.Integer(), nullable=False),
    sa.Column('iso_week', sa.String(length=8), nullable=False),
    sa.Column('score', sa.Integer(), nullable=False),
    sa.Column('answered_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['employee_id'], ['employees.id'], name=op.f('fk_pulse_responses_employee_id_employees'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_pulse_responses_org_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pulse_responses')),
    sa.UniqueConstraint('employee_id', 'iso_week', name='uq_pulse_responses_employee_id_iso_week')
    )
    op.create_index(op.f('ix_pulse_responses_org_id'), 'pulse_responses', ['org_id'], unique=False)
    op.create_table('digest_sends',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('employee_id', sa.Integer(), nullable=False),
    sa.Column('iso_week', sa.String(length=8), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('state', sa.Enum('queued', 'sending', 'sent', 'failed', 'skipped', name='digest_send_state', native_enum=False, length=10), server_default='queued', nullable=False),
    sa.Column('skip_reason', sa.String(length=40), nullable=True),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_error', sa.String(length=1000), nullable=True),
    sa.Column('message_id', sa.String(length=255), nullable=True),
    sa.Column('recipient', sa.String(length=254), nullable=True),
    sa.Column('claimed_by', sa.String(length=120), nullable=True),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('enqueued_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['employee_id'], ['employees.id'], name=op.f('fk_digest_sends_employee_id_employees'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_digest_sends_org_id_organisations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['digest_runs.id'], name=op.f('fk_digest_sends_run_id_digest_runs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_digest_sends')),
    sa.UniqueConstraint('employee_id', 'iso_week', name='uq_digest_sends_employee_id_iso_week')
    )
    op.create_index(op.f('ix_digest_sends_org_id'), 'digest_sends', ['org_id'], unique=False)
    op.create_index('ix_digest_sends_org_id_state', 'digest_sends', ['org_id', 'state'], unique=False)
    op.create_index('ix_digest_sends_run_id_state', 'digest_sends', ['run_id', 'state'], unique=False)
    op.create_index('ix_digest_sends_state_claimed_at', 'digest_sends', ['state', 'claimed_at'], unique=False)
    op.create_table('digest_items',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('send_id', sa.Integer(), nullable=False),
    sa.Column('employee_id', sa.Integer(), nullable=False),
    sa.Column('article_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['article_id'], ['articles.id'], name=op.f('fk_digest_items_article_id_articles'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['employee_id'], ['employees.id'], name=op.f('fk_digest_items_employee_id_employees'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_digest_items_org_id_organisations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['send_id'], ['digest_sends.id'], name=op.f('fk_digest_items_send_id_digest_sends'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_digest_items')),
    sa.UniqueConstraint('employee_id', 'article_id', name='uq_digest_items_employee_id_article_id')
    )
    op.create_index(op.f('ix_digest_items_article_id'), 'digest_items', ['article_id'], unique=False)
    op.create_index(op.f('ix_digest_items_org_id'), 'digest_items', ['org_id'], unique=False)
    op.create_index(op.f('ix_digest_items_send_id'), 'digest_items', ['send_id'], unique=False)

def downgrade() -> None:
    for table in ("digest_items", "digest_sends", "pulse_responses", "digest_runs", "digest_suppressions", "digest_settings"):
        op.drop_table(table)
