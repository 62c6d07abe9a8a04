"""Sites: settings_version, bumped on every change, so cached copies in other processes notice

Revision ID: c4f3a1d2e5b6
Revises: 631b88a7d3f9
Create Date: 2026-11-29 17:35:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c4f3a1d2e5b6'
down_revision = '631b88a7d3f9'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('sites', schema=None) as batch_op:
        batch_op.add_column(sa.Column('settings_version', sa.Integer(), server_default='1',
                                      nullable=False))


def downgrade():
    with op.batch_alter_table('sites', schema=None) as batch_op:
        batch_op.drop_column('settings_version')
