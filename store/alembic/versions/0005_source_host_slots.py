"""source_host_slots: the per-source-host transfer limit's semaphore

Revision ID: 0005
Revises: 0004
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'source_host_slots',
        sa.Column('source_host', sa.String(length=512), nullable=False),
        sa.Column('slot', sa.Integer(), nullable=False),
        sa.Column('holder', sa.String(length=512), nullable=False),
        sa.Column('expires_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('source_host', 'slot'),
    )


def downgrade() -> None:
    op.drop_table('source_host_slots')
