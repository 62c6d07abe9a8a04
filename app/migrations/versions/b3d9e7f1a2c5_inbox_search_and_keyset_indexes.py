"""Inbox at scale (issue 8): a trigram index for the comment search, the indexes its keyset
pages start from (cases (next due time, id) and (created_at, id)) and two for the saved views'
counts (cases (status, assignee_id) and (status, priority)); a finer statistics target on
responses.comment

The trigram index (pg_trgm) and the expression index are PostgreSQL's (`ddl_if` in the models).

Revision ID: b3d9e7f1a2c5
Revises: b3d8f2a6c9e1
Create Date: 2026-11-29 20:40:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = 'b3d9e7f1a2c5'
down_revision = 'b3d8f2a6c9e1'
branch_labels = None
depends_on = None

# app.models.SORT_DUE as SQL: the next open stage's due time, far in the future when none.
SORT_DUE = """coalesce(CASE
    WHEN acknowledged_at IS NULL AND ack_due_at IS NOT NULL THEN ack_due_at
    WHEN followed_up_at IS NULL AND followup_due_at IS NOT NULL THEN followup_due_at
    WHEN closed_at IS NULL AND close_due_at IS NOT NULL THEN close_due_at
    ELSE NULL END, '9999-12-31 00:00:00+00:00'::timestamptz)"""


def upgrade():
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.create_index('ix_cases_created_id', ['created_at', 'id'], unique=False)
        batch_op.create_index('ix_cases_status_assignee', ['status', 'assignee_id'],
                              unique=False)
        batch_op.create_index('ix_cases_status_priority', ['status', 'priority'], unique=False)
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.execute('CREATE EXTENSION IF NOT EXISTS pg_trgm')
    op.create_index('ix_responses_comment_trgm', 'responses', ['comment'], unique=False,
                    postgresql_using='gin', postgresql_ops={'comment': 'gin_trgm_ops'})
    op.create_index('ix_cases_sort_due', 'cases', [sa.text(SORT_DUE), 'id'], unique=False)
    # A finer histogram of comments: with the default one, a rare word's ILIKE looked ten
    # times more common than it was and the planner walked the due-time index through
    # 360,000 cases instead of taking the trigram index's 235 (bench/RESULTS.md).
    op.execute('ALTER TABLE responses ALTER COLUMN comment SET STATISTICS 1000')


def downgrade():
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('ALTER TABLE responses ALTER COLUMN comment SET STATISTICS -1')
        op.drop_index('ix_cases_sort_due', table_name='cases')
        op.drop_index('ix_responses_comment_trgm', table_name='responses')
        # pg_trgm stays: other objects of the database may use it.
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_index('ix_cases_status_priority')
        batch_op.drop_index('ix_cases_status_assignee')
        batch_op.drop_index('ix_cases_created_id')
