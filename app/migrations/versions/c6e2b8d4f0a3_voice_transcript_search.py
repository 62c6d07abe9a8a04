"""The inbox search reads voice-note transcripts too: a trigram index on
voice_notes.transcript (PostgreSQL; `ddl_if` in the model), as on responses.comment

Revision ID: c6e2b8d4f0a3
Revises: a1d5c8e2f7b4
Create Date: 2026-11-30 00:10:00.000000

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = 'c6e2b8d4f0a3'
down_revision = 'a1d5c8e2f7b4'
branch_labels = None
depends_on = None


def upgrade():
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.execute('CREATE EXTENSION IF NOT EXISTS pg_trgm')
    op.create_index('ix_voice_notes_transcript_trgm', 'voice_notes', ['transcript'],
                    unique=False, postgresql_using='gin',
                    postgresql_ops={'transcript': 'gin_trgm_ops'})


def downgrade():
    if op.get_bind().dialect.name == 'postgresql':
        op.drop_index('ix_voice_notes_transcript_trgm', table_name='voice_notes')
