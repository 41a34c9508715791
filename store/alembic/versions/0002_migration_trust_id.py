"""migrations.trust_id: the Keystone trust a migration's activities act through

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('migrations') as batch:
        batch.add_column(sa.Column('trust_id', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('migrations') as batch:
        batch.drop_column('trust_id')
