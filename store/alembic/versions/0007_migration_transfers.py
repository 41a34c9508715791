"""migrations.from_migrations_api: transfers that a POST /migrations created (issue 13)

Such a transfer (scenario ``live_migration``) is also the migration: ``/migrations`` lists and
shows it under the same id, the legacy ``/replicas`` routes hide it.

Revision ID: 0007
Revises: 0006
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('migrations') as batch:
        batch.add_column(sa.Column('from_migrations_api', sa.Boolean(), nullable=False,
                                   server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('migrations') as batch:
        batch.drop_column('from_migrations_api')
