"""Root cause "five whys" and response templates: cases.root_cause_category (indexed) and
cases.whys, sites.root_cause_categories, response_templates (unique site+key+locale)

Revision ID: a7c3e5d9b1f6
Revises: f1c7a9e3b2d4
Create Date: 2026-11-29 18:55:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = 'a7c3e5d9b1f6'
down_revision = 'f1c7a9e3b2d4'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('root_cause_category', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('whys', sa.JSON(), nullable=True))
        batch_op.create_index(batch_op.f('ix_cases_root_cause_category'), ['root_cause_category'],
                              unique=False)
    with op.batch_alter_table('sites', schema=None) as batch_op:
        batch_op.add_column(sa.Column('root_cause_categories', sa.JSON(), nullable=True))
    op.create_table(
        'response_templates',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('site_id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('locale', sa.String(length=16), nullable=False),
        sa.Column('title', sa.String(length=200), nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['site_id'], ['sites.id'],
                                name=op.f('fk_response_templates_site_id_sites'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_response_templates')),
        sa.UniqueConstraint('site_id', 'key', 'locale',
                            name=op.f('uq_response_templates_site_id_key_locale')),
    )
    with op.batch_alter_table('response_templates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_response_templates_site_id'), ['site_id'],
                              unique=False)


def downgrade():
    with op.batch_alter_table('response_templates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_response_templates_site_id'))
    op.drop_table('response_templates')
    with op.batch_alter_table('sites', schema=None) as batch_op:
        batch_op.drop_column('root_cause_categories')
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cases_root_cause_category'))
        batch_op.drop_column('whys')
        batch_op.drop_column('root_cause_category')
