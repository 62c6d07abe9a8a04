"""moments.questions: the question per language ({"tr": "...", ...}); `question` stays the
text as written, shown where no language has its own

Revision ID: c9e4a2f7b5d1
Revises: b3d9e7f1a2c5
Create Date: 2026-11-29 21:20:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = 'c9e4a2f7b5d1'
down_revision = 'b3d9e7f1a2c5'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('moments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('questions', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('moments', schema=None) as batch_op:
        batch_op.drop_column('questions')
