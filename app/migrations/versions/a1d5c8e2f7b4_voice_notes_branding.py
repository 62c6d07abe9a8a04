"""voice notes (audio in the storage backend, transcript) and the shop's logo and accent colour

Revision ID: a1d5c8e2f7b4
Revises: f4b2d8e6a9c3
Create Date: 2026-11-29 23:55:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = 'a1d5c8e2f7b4'
down_revision = 'f4b2d8e6a9c3'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'voice_notes',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('public_id', sa.String(length=32), nullable=False),
        sa.Column('site_id', sa.Integer(), nullable=False),
        sa.Column('response_id', sa.Integer(), nullable=True),
        sa.Column('storage_key', sa.String(length=200), nullable=False),
        sa.Column('content_type', sa.String(length=64), nullable=False),
        sa.Column('size_bytes', sa.Integer(), nullable=False),
        sa.Column('duration_ms', sa.Integer(), nullable=False),
        sa.Column('transcript_status', sa.String(length=16), nullable=False),
        sa.Column('transcript', sa.Text(), nullable=True),
        sa.Column('transcript_lang', sa.String(length=16), nullable=True),
        sa.Column('transcript_engine', sa.String(length=32), nullable=True),
        sa.Column('transcribed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['response_id'], ['responses.id'],
                                name=op.f('fk_voice_notes_response_id_responses'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['site_id'], ['sites.id'], name=op.f('fk_voice_notes_site_id_sites'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_voice_notes')),
        sa.UniqueConstraint('public_id', name=op.f('uq_voice_notes_public_id')),
        sa.UniqueConstraint('response_id', name=op.f('uq_voice_notes_response_id')),
        sa.UniqueConstraint('storage_key', name=op.f('uq_voice_notes_storage_key')),
    )
    with op.batch_alter_table('voice_notes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_voice_notes_site_id'), ['site_id'], unique=False)
        batch_op.create_index('ix_voice_notes_unclaimed', ['claimed_at', 'created_at'],
                              unique=False)
    with op.batch_alter_table('sites', schema=None) as batch_op:
        batch_op.add_column(sa.Column('logo_key', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('logo_content_type', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('accent_color', sa.String(length=7), nullable=True))


def downgrade():
    with op.batch_alter_table('sites', schema=None) as batch_op:
        batch_op.drop_column('accent_color')
        batch_op.drop_column('logo_content_type')
        batch_op.drop_column('logo_key')
    with op.batch_alter_table('voice_notes', schema=None) as batch_op:
        batch_op.drop_index('ix_voice_notes_unclaimed')
        batch_op.drop_index(batch_op.f('ix_voice_notes_site_id'))
    op.drop_table('voice_notes')
