"""cards: an index on issue_request_id, so an approved request's reserved cards are found without a scan

Finance's approval now reserves the exact cards it approves by writing the
request's id into ``cards.issue_request_id`` (see ``cardmgmt.issuing``);
collection, cancellation and the look-ups then find those cards by that id.
The reservation pays for it: changing an indexed column is not a heap-only
update, so a million-card approval takes about twice as long on PostgreSQL
(bench/RESULTS.md); without it every collection and cancellation would scan
the whole ``cards`` table, however few cards it concerns.  Redemption and
the other state changes do not touch this column and stay heap-only
(revision 0003).

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""

from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('cards', schema=None) as batch_op:
        batch_op.create_index('ix_cards_issue_request', ['issue_request_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('cards', schema=None) as batch_op:
        batch_op.drop_index('ix_cards_issue_request')
