"""The inbox search over transcripts, planner-friendly: responses.transcript (a copy of the
voice note's, written with it) and its trigram index replace the index on
voice_notes.transcript (c6e2b8d4f0a3)

Searching two tables took the union of the answer ids each trigram index found and joined it to
the page: at 200,000 answers a common word ("refund", 7,500 hits) cost a hash join over every
case and a sort (660 ms) where the comment-only search walked the due-time index and stopped at
the page's 51 rows (4 ms). With both texts on `responses`, `comment ILIKE … OR transcript ILIKE
…` keeps that walk for common words and is a BitmapOr of the two trigram indexes for rare ones.

The trigram index is PostgreSQL's (`ddl_if` in the model).

Revision ID: d4a7f2c9e8b1
Revises: c6e2b8d4f0a3
Create Date: 2026-11-30 00:30:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = 'd4a7f2c9e8b1'
down_revision = 'c6e2b8d4f0a3'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('responses', schema=None) as batch_op:
        batch_op.add_column(sa.Column('transcript', sa.Text(), nullable=True))
    op.execute('UPDATE responses SET transcript = (SELECT v.transcript FROM voice_notes v '
               'WHERE v.response_id = responses.id) WHERE has_voice')
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.drop_index('ix_voice_notes_transcript_trgm', table_name='voice_notes')
    op.create_index('ix_responses_transcript_trgm', 'responses', ['transcript'], unique=False,
                    postgresql_using='gin', postgresql_ops={'transcript': 'gin_trgm_ops'})


def downgrade():
    if op.get_bind().dialect.name == 'postgresql':
        op.drop_index('ix_responses_transcript_trgm', table_name='responses')
        op.create_index('ix_voice_notes_transcript_trgm', 'voice_notes', ['transcript'],
                        unique=False, postgresql_using='gin',
                        postgresql_ops={'transcript': 'gin_trgm_ops'})
    with op.batch_alter_table('responses', schema=None) as batch_op:
        batch_op.drop_column('transcript')
