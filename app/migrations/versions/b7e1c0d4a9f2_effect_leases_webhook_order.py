"""Effect leases (emails, webhook deliveries) and per-case webhook order

Revision ID: b7e1c0d4a9f2
Revises: c4f3a1d2e5b6
Create Date: 2026-11-29 18:10:00

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = 'b7e1c0d4a9f2'
down_revision = 'c4f3a1d2e5b6'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('emails', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('case_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_webhook_deliveries_case_id_cases', 'cases',
                                    ['case_id'], ['id'], ondelete='SET NULL')
        batch_op.create_index('ix_webhook_deliveries_case',
                              ['endpoint_id', 'case_id', 'status'], unique=False)


def downgrade():
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_deliveries_case')
        batch_op.drop_constraint('fk_webhook_deliveries_case_id_cases', type_='foreignkey')
        batch_op.drop_column('case_id')
        batch_op.drop_column('lease_until')
    with op.batch_alter_table('emails', schema=None) as batch_op:
        batch_op.drop_column('lease_until')
