"""replica_disks.change_marker: the source's change-tracking marker the replica last synced from

Revision ID: 0004
Revises: 0003
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('replica_disks') as batch:
        batch.add_column(sa.Column('change_marker', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('replica_disks') as batch:
        batch.drop_column('change_marker')
