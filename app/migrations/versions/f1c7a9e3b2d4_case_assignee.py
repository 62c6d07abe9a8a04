"""Cases assigned to a person: cases.assignee_id (staff_users, SET NULL, indexed)

Revision ID: f1c7a9e3b2d4
Revises: e5b9d3a7c1f4
Create Date: 2026-11-29 18:45:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = 'f1c7a9e3b2d4'
down_revision = 'e5b9d3a7c1f4'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('assignee_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_cases_assignee_id'), ['assignee_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_cases_assignee_id_staff_users'),
                                    'staff_users', ['assignee_id'], ['id'], ondelete='SET NULL')


def downgrade():
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_cases_assignee_id_staff_users'),
                                 type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_cases_assignee_id'))
        batch_op.drop_column('assignee_id')
