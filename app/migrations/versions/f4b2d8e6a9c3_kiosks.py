"""kiosks: in-store tablets, each asking one moment with a revocable long-lived link

Revision ID: f4b2d8e6a9c3
Revises: d2f8b6a4e1c7
Create Date: 2026-11-29 21:50:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = 'f4b2d8e6a9c3'
down_revision = 'd2f8b6a4e1c7'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'kiosks',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('site_id', sa.Integer(), nullable=False),
        sa.Column('moment_key', sa.String(length=64), nullable=False),
        sa.Column('store', sa.String(length=100), nullable=False),
        sa.Column('label', sa.String(length=100), nullable=False),
        sa.Column('created_by', sa.String(length=254), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['site_id'], ['sites.id'], name=op.f('fk_kiosks_site_id_sites'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_kiosks')),
    )
    with op.batch_alter_table('kiosks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_kiosks_site_id'), ['site_id'], unique=False)


def downgrade():
    with op.batch_alter_table('kiosks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_kiosks_site_id'))
    op.drop_table('kiosks')
