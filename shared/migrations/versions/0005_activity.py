"""activity events, analytics keys, report settings, report cells and members, release log

Revision ID: 0005_activity
Revises: 0003_employees
"""
from alembic import op
import sqlalchemy as sa


revision = "0005_activity"
down_revision = "0003_employees"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('activity_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('iso_week', sa.String(length=8), nullable=False),
    sa.Column('pseudonym', sa.String(length=64), nullable=False),
    sa.Column('department', sa.String(length=100), server_default='', nullable=False),
    sa.Column('team', sa.String(length=100), server_default='', nullable=False),
    sa.Column('score', sa.Integer(), nullable=True),
    sa.Column('article_id', sa.Integer(), nullable=True),
    sa.Column('program_id', sa.Integer(), nullable=True),
    sa.Column('topic', sa.String(length=100), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_activity_events_org_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_activity_events')),
    sa.UniqueConstraint('org_id', 'event_id', name='uq_activity_events_org_id_event_id')
    )
    op.create_index(op.f('ix_activity_events_org_id'), 'activity_events', ['org_id'], unique=False)
    op.create_index('ix_activity_events_org_id_iso_week', 'activity_events', ['org_id', 'iso_week'], unique=False)
    op.create_index('ix_activity_events_org_id_occurred_at', 'activity_events', ['org_id', 'occurred_at'], unique=False)
    op.create_index('ix_activity_events_org_id_pseudonym', 'activity_events', ['org_id', 'pseudonym'], unique=False)
    op.create_table('analytics_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.LargeBinary(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('rotated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_analytics_keys_org_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_analytics_keys')),
    sa.UniqueConstraint('org_id', name='uq_analytics_keys_org_id')
    )
    op.create_index(op.f('ix_analytics_keys_org_id'), 'analytics_keys', ['org_id'], unique=False)
    op.create_table('report_cells',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('window', sa.Integer(), nullable=False),
    sa.Column('iso_week', sa.String(length=8), nullable=False),
    sa.Column('group_kind', sa.String(length=12), nullable=False),
    sa.Column('group_key', sa.String(length=201), nullable=False),
    sa.Column('parent_key', sa.String(length=201), nullable=True),
    sa.Column('headcount', sa.Integer(), nullable=False),
    sa.Column('participants', sa.Integer(), nullable=False),
    sa.Column('delivered', sa.Integer(), nullable=False),
    sa.Column('clicked', sa.Integer(), nullable=False),
    sa.Column('respondents', sa.Integer(), nullable=False),
    sa.Column('pulse_sum', sa.Integer(), nullable=False),
    sa.Column('pulse_answers', sa.Integer(), nullable=False),
    sa.Column('readers', sa.Integer(), nullable=False),
    sa.Column('enrolments', sa.Integer(), nullable=False),
    sa.Column('attendances', sa.Integer(), nullable=False),
    sa.Column('completions', sa.Integer(), nullable=False),
    sa.Column('built_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_report_cells_org_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_report_cells')),
    sa.UniqueConstraint('org_id', 'window', 'iso_week', 'group_kind', 'group_key', name='uq_report_cells_org_id_window')
    )
    op.create_index(op.f('ix_report_cells_org_id'), 'report_cells', ['org_id'], unique=False)
    op.create_index('ix_report_cells_org_id_iso_week', 'report_cells', ['org_id', 'iso_week'], unique=False)
    op.create_table('report_dirty_weeks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('iso_week', sa.String(length=8), nullable=False),
    sa.Column('marked_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_report_dirty_weeks_org_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_report_dirty_weeks')),
    sa.UniqueConstraint('org_id', 'iso_week', name='uq_report_dirty_weeks_org_id_iso_week')
    )
    op.create_index(op.f('ix_report_dirty_weeks_org_id'), 'report_dirty_weeks', ['org_id'], unique=False)
    op.create_table('report_release_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('period', sa.String(length=40), nullable=False),
    sa.Column('group_id', sa.String(length=260), nullable=False),
    sa.Column('set_hash', sa.String(length=64), nullable=False),
    sa.Column('members', sa.JSON(), nullable=False),
    sa.Column('released_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_report_release_log_org_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_report_release_log')),
    sa.UniqueConstraint('org_id', 'period', 'group_id', 'set_hash', name='uq_report_release_log_org_id_period')
    )
    op.create_index(op.f('ix_report_release_log_org_id'), 'report_release_log', ['org_id'], unique=False)
    op.create_index('ix_report_release_log_org_id_released_at', 'report_release_log', ['org_id', 'released_at'], unique=False)
    op.create_table('report_settings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('activity_retention_months', sa.Integer(), server_default='13', nullable=False),
    sa.Column('dp_enabled', sa.Boolean(), server_default='0', nullable=False),
    sa.Column('dp_mechanism', sa.String(length=10), server_default='laplace', nullable=False),
    sa.Column('epsilon_per_period', sa.Float(), server_default='1.0', nullable=False),
    sa.Column('epsilon_per_value', sa.Float(), server_default='0.1', nullable=False),
    sa.Column('budget_spent', sa.JSON(), nullable=False),
    sa.Column('last_built_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_report_settings_org_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_report_settings')),
    sa.UniqueConstraint('org_id', name='uq_report_settings_org_id')
    )
    op.create_index(op.f('ix_report_settings_org_id'), 'report_settings', ['org_id'], unique=False)
    op.create_table('activity_lines',
    sa.Column('event_pk', sa.Integer(), nullable=False),
    sa.Column('line', sa.String(length=64), nullable=False),
    sa.Column('depth', sa.Integer(), nullable=False),
    sa.Column('iso_week', sa.String(length=8), nullable=False),
    sa.Column('parent_line', sa.String(length=64), nullable=True),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['event_pk'], ['activity_events.id'], name=op.f('fk_activity_lines_event_pk_activity_events'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_activity_lines_org_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('event_pk', 'line', name=op.f('pk_activity_lines'))
    )
    op.create_index(op.f('ix_activity_lines_org_id'), 'activity_lines', ['org_id'], unique=False)
    op.create_index('ix_activity_lines_org_id_iso_week_line', 'activity_lines', ['org_id', 'iso_week', 'line'], unique=False)
    op.create_table('report_cell_members',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('cell_id', sa.Integer(), nullable=False),
    sa.Column('member_set', sa.String(length=110), nullable=False),
    sa.Column('pseudonym', sa.String(length=64), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['cell_id'], ['report_cells.id'], name=op.f('fk_report_cell_members_cell_id_report_cells'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_report_cell_members_org_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_report_cell_members'))
    )
    op.create_index('ix_report_cell_members_cell_id_member_set', 'report_cell_members', ['cell_id', 'member_set'], unique=False)
    op.create_index(op.f('ix_report_cell_members_org_id'), 'report_cell_members', ['org_id'], unique=False)


def downgrade() -> None:
    op.drop_table('report_cell_members')
    op.drop_table('activity_lines')
    op.drop_table('report_settings')
    op.drop_table('report_release_log')
    op.drop_table('report_dirty_weeks')
    op.drop_table('report_cells')
    op.drop_table('analytics_keys')
    op.drop_table('activity_events')
