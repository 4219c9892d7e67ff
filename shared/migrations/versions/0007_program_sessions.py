"""program sessions and session attendance

Revision ID: 0007_program_sessions
Revises: 0006_merge
"""
from alembic import op
import sqlalchemy as sa


revision = "0007_program_sessions"
down_revision = "0006_merge"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('program_sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('program_id', sa.Integer(), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('duration_minutes', sa.Integer(), nullable=False),
    sa.Column('location', sa.String(length=200), server_default='', nullable=False),
    sa.Column('join_url', sa.String(length=500), server_default='', nullable=False),
    sa.Column('capacity', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_program_sessions_org_id_organisations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['program_id'], ['programs.id'], name=op.f('fk_program_sessions_program_id_programs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_program_sessions'))
    )
    op.create_index(op.f('ix_program_sessions_org_id'), 'program_sessions', ['org_id'], unique=False)
    op.create_index('ix_program_sessions_org_id_starts_at', 'program_sessions', ['org_id', 'starts_at'], unique=False)
    op.create_index(op.f('ix_program_sessions_program_id'), 'program_sessions', ['program_id'], unique=False)
    op.create_table('program_session_attendances',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=False),
    sa.Column('employee_id', sa.Integer(), nullable=False),
    sa.Column('marked_by_user_id', sa.Integer(), nullable=True),
    sa.Column('marked_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['employee_id'], ['employees.id'], name=op.f('fk_program_session_attendances_employee_id_employees'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['marked_by_user_id'], ['users.id'], name=op.f('fk_program_session_attendances_marked_by_user_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_program_session_attendances_org_id_organisations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['session_id'], ['program_sessions.id'], name=op.f('fk_program_session_attendances_session_id_program_sessions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_program_session_attendances')),
    sa.UniqueConstraint('session_id', 'employee_id', name='uq_program_session_attendances_session_id_employee_id')
    )
    op.create_index(op.f('ix_program_session_attendances_employee_id'), 'program_session_attendances', ['employee_id'], unique=False)
    op.create_index(op.f('ix_program_session_attendances_org_id'), 'program_session_attendances', ['org_id'], unique=False)
    op.create_index(op.f('ix_program_session_attendances_session_id'), 'program_session_attendances', ['session_id'], unique=False)


def downgrade() -> None:
    op.drop_table('program_session_attendances')
    op.drop_table('program_sessions')
