"""transfers, deployments, schedules and replica disks

Transfers and deployments are rows of ``migrations`` (Coriolis's base_transfer_action) told
apart by ``type``; their executions and tasks use the existing tables.

Revision ID: 0003
Revises: 0002
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('migrations') as batch:
        batch.add_column(sa.Column('type', sa.String(length=32), nullable=False, server_default='migration'))
        batch.add_column(sa.Column('scenario', sa.String(length=32), nullable=True))
        batch.add_column(sa.Column('clone_disks', sa.Boolean(), nullable=False, server_default=sa.true()))
        batch.add_column(sa.Column('transfer_id', sa.String(length=36), nullable=True))
        batch.add_column(sa.Column('deployer_id', sa.String(length=36), nullable=True))
        batch.create_index('ix_migrations_type', ['type'], unique=False)
        batch.create_index('ix_migrations_transfer_id', ['transfer_id'], unique=False)
    with op.batch_alter_table('executions') as batch:
        batch.add_column(sa.Column('workflow_id', sa.String(length=255), nullable=True))
    def _row() -> list[sa.Column[object]]:
        return [
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=True),
        sa.Column('deleted_at', sa.DateTime(), nullable=True),
        sa.Column('deleted', sa.Boolean(), nullable=False),
        ]
    op.create_table(
        'transfer_schedules',
        sa.Column('transfer_id', sa.String(length=36), sa.ForeignKey('migrations.id'), nullable=False),
        sa.Column('project_id', sa.String(length=255), nullable=False),
        sa.Column('schedule', sa.JSON(), nullable=False),
        sa.Column('expiration_date', sa.DateTime(), nullable=True),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('shutdown_instance', sa.Boolean(), nullable=False),
        sa.Column('auto_deploy', sa.Boolean(), nullable=False),
        *_row(),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_transfer_schedules_transfer_id', 'transfer_schedules', ['transfer_id'])
    op.create_index('ix_transfer_schedules_project_id', 'transfer_schedules', ['project_id'])
    op.create_table(
        'replica_disks',
        sa.Column('transfer_id', sa.String(length=36), sa.ForeignKey('migrations.id'), nullable=False),
        sa.Column('instance', sa.String(length=1024), nullable=False),
        sa.Column('disk_id', sa.String(length=255), nullable=False),
        sa.Column('path', sa.Text(), nullable=True),
        sa.Column('format', sa.String(length=16), nullable=False),
        sa.Column('size_bytes', sa.BigInteger(), nullable=False),
        sa.Column('chunk_size', sa.Integer(), nullable=False),
        sa.Column('digests', sa.LargeBinary(), nullable=True),
        sa.Column('trusted', sa.Boolean(), nullable=False),
        sa.Column('last_execution_id', sa.String(length=36), nullable=True),
        *_row(),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_replica_disks_transfer_id', 'replica_disks', ['transfer_id'])


def downgrade() -> None:
    op.drop_table('replica_disks')
    op.drop_table('transfer_schedules')
    with op.batch_alter_table('executions') as batch:
        batch.drop_column('workflow_id')
    with op.batch_alter_table('migrations') as batch:
        batch.drop_index('ix_migrations_transfer_id')
        batch.drop_index('ix_migrations_type')
        for name in ('deployer_id', 'transfer_id', 'clone_disks', 'scenario', 'type'):
            batch.drop_column(name)
