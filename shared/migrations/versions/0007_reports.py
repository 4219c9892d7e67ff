"""reports from a per-person weekly summary: events carry the direct manager, activity_lines
becomes the weekly reporting-line tree, report_cell_members is replaced by
report_person_weeks (member sets are derived on demand), headcounts per week, analytics key
versions

Revision ID: 0007_reports
Revises: 0006_merge
"""
from alembic import op
import sqlalchemy as sa


revision = "0007_reports"
down_revision = "0006_merge"
branch_labels = None
depends_on = None


def _org_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f(f'fk_{table}_org_id_organisations'), ondelete='CASCADE')


def upgrade() -> None:
    with op.batch_alter_table('analytics_keys') as batch:
        batch.add_column(sa.Column('version', sa.Integer(), server_default='1', nullable=False))
    with op.batch_alter_table('activity_events') as batch:
        batch.add_column(sa.Column('manager', sa.String(length=64), server_default='', nullable=False))
    op.execute("UPDATE activity_events SET manager = COALESCE((SELECT l.line FROM activity_lines l "
               "WHERE l.event_pk = activity_events.id AND l.depth = 1), '')")
    old_lines = op.get_bind().execute(sa.text(
        "SELECT org_id, iso_week, line, MAX(parent_line) FROM activity_lines GROUP BY org_id, iso_week, line")).all()
    op.drop_table('activity_lines')
    op.create_table('activity_lines',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('iso_week', sa.String(length=8), nullable=False),
    sa.Column('week_no', sa.Integer(), nullable=False),
    sa.Column('line', sa.String(length=64), nullable=False),
    sa.Column('parent_line', sa.String(length=64), nullable=True),
    sa.Column('org_id', sa.Integer(), nullable=False),
    _org_fk('activity_lines'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_activity_lines')),
    sa.UniqueConstraint('org_id', 'iso_week', 'line', name='uq_activity_lines_org_id_iso_week_line')
    )
    op.create_index(op.f('ix_activity_lines_org_id'), 'activity_lines', ['org_id'], unique=False)
    op.create_index('ix_activity_lines_org_id_week_no', 'activity_lines', ['org_id', 'week_no'], unique=False)
    if old_lines:
        from shared.domain.activity import week_number

        op.bulk_insert(sa.table('activity_lines', sa.column('org_id'), sa.column('iso_week'), sa.column('week_no'),
                                sa.column('line'), sa.column('parent_line')),
                       [{"org_id": o, "iso_week": w, "week_no": week_number(w), "line": l, "parent_line": p}
                        for o, w, l, p in old_lines])
    op.drop_table('report_cell_members')
    op.create_table('report_person_weeks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('iso_week', sa.String(length=8), nullable=False),
    sa.Column('week_no', sa.Integer(), nullable=False),
    sa.Column('pseudonym', sa.String(length=64), nullable=False),
    sa.Column('department', sa.String(length=100), nullable=False),
    sa.Column('team', sa.String(length=100), nullable=False),
    sa.Column('manager', sa.String(length=64), nullable=False),
    *[sa.Column(name, sa.Integer(), nullable=False) for name in (
        'delivered', 'clicked', 'reads', 'pulse_answers', 'pulse_sum', 'score_1', 'score_2', 'score_3', 'score_4',
        'score_5', 'enrolments', 'attendances', 'completions')],
    sa.Column('topics', sa.Text(), nullable=True),
    sa.Column('org_id', sa.Integer(), nullable=False),
    _org_fk('report_person_weeks'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_report_person_weeks'))
    )
    op.create_index(op.f('ix_report_person_weeks_org_id'), 'report_person_weeks', ['org_id'], unique=False)
    op.create_index('ix_report_person_weeks_org_id_week_no', 'report_person_weeks', ['org_id', 'week_no'], unique=False)
    op.create_index('ix_report_person_weeks_org_id_pseudonym', 'report_person_weeks', ['org_id', 'pseudonym'], unique=False)
    op.create_table('report_headcounts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('iso_week', sa.String(length=8), nullable=False),
    sa.Column('group_kind', sa.String(length=12), nullable=False),
    sa.Column('group_key', sa.String(length=201), nullable=False),
    sa.Column('headcount', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    _org_fk('report_headcounts'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_report_headcounts')),
    sa.UniqueConstraint('org_id', 'iso_week', 'group_kind', 'group_key', name='uq_report_headcounts_org_id_iso_week')
    )
    op.create_index(op.f('ix_report_headcounts_org_id'), 'report_headcounts', ['org_id'], unique=False)
    # every week with events is rebuilt into the new summary by the next `wellbeing reports build`
    op.execute("INSERT INTO report_dirty_weeks (org_id, iso_week) SELECT DISTINCT org_id, iso_week FROM activity_events "
               "WHERE NOT EXISTS (SELECT 1 FROM report_dirty_weeks d WHERE d.org_id = activity_events.org_id "
               "AND d.iso_week = activity_events.iso_week)")


def downgrade() -> None:
    op.drop_table('report_headcounts')
    op.drop_table('report_person_weeks')
    op.create_table('report_cell_members',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('cell_id', sa.Integer(), nullable=False),
    sa.Column('member_set', sa.String(length=110), nullable=False),
    sa.Column('pseudonym', sa.String(length=64), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['cell_id'], ['report_cells.id'], name=op.f('fk_report_cell_members_cell_id_report_cells'), ondelete='CASCADE'),
    _org_fk('report_cell_members'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_report_cell_members'))
    )
    op.create_index('ix_report_cell_members_cell_id_member_set', 'report_cell_members', ['cell_id', 'member_set'], unique=False)
    op.create_index(op.f('ix_report_cell_members_org_id'), 'report_cell_members', ['org_id'], unique=False)
    # the per-event manager chains cannot be recovered from the weekly tree: rebuild reports after downgrading
    op.drop_table('activity_lines')
    op.create_table('activity_lines',
    sa.Column('event_pk', sa.Integer(), nullable=False),
    sa.Column('line', sa.String(length=64), nullable=False),
    sa.Column('depth', sa.Integer(), nullable=False),
    sa.Column('iso_week', sa.String(length=8), nullable=False),
    sa.Column('parent_line', sa.String(length=64), nullable=True),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['event_pk'], ['activity_events.id'], name=op.f('fk_activity_lines_event_pk_activity_events'), ondelete='CASCADE'),
    _org_fk('activity_lines'),
    sa.PrimaryKeyConstraint('event_pk', 'line', name=op.f('pk_activity_lines'))
    )
    op.create_index(op.f('ix_activity_lines_org_id'), 'activity_lines', ['org_id'], unique=False)
    op.create_index('ix_activity_lines_org_id_iso_week_line', 'activity_lines', ['org_id', 'iso_week', 'line'], unique=False)
    with op.batch_alter_table('activity_events') as batch:
        batch.drop_column('manager')
    with op.batch_alter_table('analytics_keys') as batch:
        batch.drop_column('version')
