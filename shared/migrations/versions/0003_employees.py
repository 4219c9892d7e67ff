"""employees

Revision ID: 0003_employees
Revises: 0001_foundation
Create Date: 2026-11-25 11:54:45.648071
"""
from alembic import op
import sqlalchemy as sa


revision = '0003_employees'
down_revision = '0001_foundation'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('employees',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('external_id', sa.String(length=64), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('first_name', sa.String(length=100), nullable=False),
    sa.Column('last_name', sa.String(length=100), nullable=False),
    sa.Column('department', sa.String(length=100), server_default='', nullable=False),
    sa.Column('team', sa.String(length=100), server_default='', nullable=False),
    sa.Column('manager_external_id', sa.String(length=64), nullable=True),
    sa.Column('manager_id', sa.Integer(), nullable=True),
    sa.Column('timezone', sa.String(length=64), server_default='UTC', nullable=False),
    sa.Column('locale', sa.String(length=16), server_default='', nullable=False),
    sa.Column('status', sa.Enum('active', 'left', name='employeestatus', native_enum=False, length=10), server_default='active', nullable=False),
    sa.Column('left_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('digest_consent', sa.Boolean(), server_default='1', nullable=False),
    sa.Column('analytics_consent', sa.Boolean(), server_default='0', nullable=False),
    sa.Column('digest_weekday', sa.Integer(), server_default='0', nullable=False),
    sa.Column('digest_hour', sa.Integer(), server_default='9', nullable=False),
    sa.Column('digest_topics', sa.JSON(), nullable=False),
    sa.Column('paused_until', sa.Date(), nullable=True),
    sa.Column('link_epoch', sa.Integer(), server_default='0', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['manager_id'], ['employees.id'], name=op.f('fk_employees_manager_id_employees'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_employees_org_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_employees')),
    sa.UniqueConstraint('org_id', 'email', name='uq_employees_org_id_email'),
    sa.UniqueConstraint('org_id', 'external_id', name='uq_employees_org_id_external_id')
    )

    with op.batch_alter_table('employees', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_employees_manager_id'), ['manager_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_employees_org_id'), ['org_id'], unique=False)
        batch_op.create_index('ix_employees_org_id_status', ['org_id', 'status'], unique=False)

    op.create_table('programs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), server_default='', nullable=False),
    sa.Column('topics', sa.JSON(), nullable=False),
    sa.Column('starts_on', sa.Date(), nullable=True),
    sa.Column('ends_on', sa.Date(), nullable=True),
    sa.Column('capacity', sa.Integer(), nullable=True),
    sa.Column('status', sa.Enum('draft', 'open', 'closed', 'archived', name='programstatus', native_enum=False, length=10), server_default='draft', nullable=False),
    sa.Column('lock_version', sa.Integer(), server_default='0', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_programs_org_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_programs'))
    )

    with op.batch_alter_table('programs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_programs_org_id'), ['org_id'], unique=False)

    op.create_table('employee_consents',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('employee_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('digest_emails', 'activity_analytics', name='consentkind', native_enum=False, length=30), nullable=False),
    sa.Column('granted', sa.Boolean(), nullable=False),
    sa.Column('source', sa.Enum('import', 'admin', 'employee_link', name='consentsource', native_enum=False, length=20), nullable=False),
    sa.Column('actor_user_id', sa.Integer(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['actor_user_id'], ['users.id'], name=op.f('fk_employee_consents_actor_user_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['employee_id'], ['employees.id'], name=op.f('fk_employee_consents_employee_id_employees'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_employee_consents_org_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_employee_consents'))
    )

    with op.batch_alter_table('employee_consents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_employee_consents_employee_id'), ['employee_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_employee_consents_org_id'), ['org_id'], unique=False)

    op.create_table('employee_import_jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('queued', 'validating', 'applying', 'done', 'failed', name='importstatus', native_enum=False, length=12), nullable=False),
    sa.Column('mode', sa.Enum('dry_run', 'atomic', 'partial', name='importmode', native_enum=False, length=10), nullable=False),
    sa.Column('mark_missing_as_left', sa.Boolean(), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('size_bytes', sa.Integer(), nullable=False),
    sa.Column('created_by_user_id', sa.Integer(), nullable=True),
    sa.Column('rows_total', sa.Integer(), nullable=True),
    sa.Column('rows_done', sa.Integer(), nullable=False),
    sa.Column('created_count', sa.Integer(), nullable=False),
    sa.Column('updated_count', sa.Integer(), nullable=False),
    sa.Column('unchanged_count', sa.Integer(), nullable=False),
    sa.Column('left_count', sa.Integer(), nullable=False),
    sa.Column('error_count', sa.Integer(), nullable=False),
    sa.Column('error_rows', sa.Integer(), nullable=False),
    sa.Column('errors', sa.JSON(), nullable=False),
    sa.Column('applied', sa.Boolean(), nullable=False),
    sa.Column('failure', sa.String(length=500), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['created_by_user_id'], ['users.id'], name=op.f('fk_employee_import_jobs_created_by_user_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_employee_import_jobs_org_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_employee_import_jobs'))
    )

    with op.batch_alter_table('employee_import_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_employee_import_jobs_org_id'), ['org_id'], unique=False)

    op.create_table('enrolment_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('program_id', sa.Integer(), nullable=False),
    sa.Column('employee_id', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=20), nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('actor_user_id', sa.Integer(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['actor_user_id'], ['users.id'], name=op.f('fk_enrolment_events_actor_user_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['employee_id'], ['employees.id'], name=op.f('fk_enrolment_events_employee_id_employees'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_enrolment_events_org_id_organisations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['program_id'], ['programs.id'], name=op.f('fk_enrolment_events_program_id_programs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_enrolment_events'))
    )

    with op.batch_alter_table('enrolment_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_enrolment_events_employee_id'), ['employee_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_enrolment_events_org_id'), ['org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_enrolment_events_program_id'), ['program_id'], unique=False)

    op.create_table('enrolments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('program_id', sa.Integer(), nullable=False),
    sa.Column('employee_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('enrolled', 'waitlisted', 'withdrawn', name='enrolmentstatus', native_enum=False, length=12), nullable=False),
    sa.Column('waitlist_seq', sa.Integer(), nullable=True),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['employee_id'], ['employees.id'], name=op.f('fk_enrolments_employee_id_employees'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_enrolments_org_id_organisations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['program_id'], ['programs.id'], name=op.f('fk_enrolments_program_id_programs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_enrolments')),
    sa.UniqueConstraint('program_id', 'employee_id', name='uq_enrolments_program_id_employee_id')
    )

    with op.batch_alter_table('enrolments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_enrolments_employee_id'), ['employee_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_enrolments_org_id'), ['org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_enrolments_program_id'), ['program_id'], unique=False)

    op.create_table('employee_import_chunks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=True),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['employee_import_jobs.id'], name=op.f('fk_employee_import_chunks_job_id_employee_import_jobs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_employee_import_chunks_org_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_employee_import_chunks'))
    )

    with op.batch_alter_table('employee_import_chunks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_employee_import_chunks_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_employee_import_chunks_org_id'), ['org_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('employee_import_chunks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_employee_import_chunks_org_id'))
        batch_op.drop_index(batch_op.f('ix_employee_import_chunks_job_id'))

    op.drop_table('employee_import_chunks')

    with op.batch_alter_table('enrolments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_enrolments_program_id'))
        batch_op.drop_index(batch_op.f('ix_enrolments_org_id'))
        batch_op.drop_index(batch_op.f('ix_enrolments_employee_id'))

    op.drop_table('enrolments')

    with op.batch_alter_table('enrolment_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_enrolment_events_program_id'))
        batch_op.drop_index(batch_op.f('ix_enrolment_events_org_id'))
        batch_op.drop_index(batch_op.f('ix_enrolment_events_employee_id'))

    op.drop_table('enrolment_events')

    with op.batch_alter_table('employee_import_jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_employee_import_jobs_org_id'))

    op.drop_table('employee_import_jobs')

    with op.batch_alter_table('employee_consents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_employee_consents_org_id'))
        batch_op.drop_index(batch_op.f('ix_employee_consents_employee_id'))

    op.drop_table('employee_consents')

    with op.batch_alter_table('programs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_programs_org_id'))

    op.drop_table('programs')

    with op.batch_alter_table('employees', schema=None) as batch_op:
        batch_op.drop_index('ix_employees_org_id_status')
        batch_op.drop_index(batch_op.f('ix_employees_org_id'))
        batch_op.drop_index(batch_op.f('ix_employees_manager_id'))

    op.drop_table('employees')
