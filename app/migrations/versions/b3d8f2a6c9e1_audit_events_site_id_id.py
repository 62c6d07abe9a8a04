"""audit_events: index (site_id, id) for the owners' audit-log page (newest first, keyset
pages on id)

Revision ID: b3d8f2a6c9e1
Revises: a7c3e5d9b1f6
Create Date: 2026-11-29 21:10:00.000000

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = 'b3d8f2a6c9e1'
down_revision = 'a7c3e5d9b1f6'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index('ix_audit_events_site_id_id', ['site_id', 'id'], unique=False)


def downgrade():
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_events_site_id_id')
