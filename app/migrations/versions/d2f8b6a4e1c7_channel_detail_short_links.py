"""responses.channel_detail (which store, till or agent of the channel) and short_links (the
SMS links that redirect to a verified prompt)

Revision ID: d2f8b6a4e1c7
Revises: e7a4c2b9d6f3
Create Date: 2026-11-29 21:40:00.000000

"""
import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = 'd2f8b6a4e1c7'
down_revision = 'e7a4c2b9d6f3'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('responses', schema=None) as batch_op:
        batch_op.add_column(sa.Column('channel_detail', sa.String(length=100), nullable=True))
    op.create_table(
        'short_links',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('code', sa.String(length=16), nullable=False),
        sa.Column('site_id', sa.Integer(), nullable=False),
        sa.Column('token', sa.Text(), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['site_id'], ['sites.id'],
                                name=op.f('fk_short_links_site_id_sites'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_short_links')),
        sa.UniqueConstraint('code', name=op.f('uq_short_links_code')),
    )
    with op.batch_alter_table('short_links', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_short_links_expires_at'), ['expires_at'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_short_links_site_id'), ['site_id'], unique=False)


def downgrade():
    with op.batch_alter_table('short_links', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_short_links_site_id'))
        batch_op.drop_index(batch_op.f('ix_short_links_expires_at'))
    op.drop_table('short_links')
    with op.batch_alter_table('responses', schema=None) as batch_op:
        batch_op.drop_column('channel_detail')
