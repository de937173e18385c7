"""cards: heap-only state changes (no index on state; fillfactor 50 on PostgreSQL)

Checking a million-card post-production file updates every card's state.
With ``state`` in an index and pages filled by COPY, PostgreSQL wrote a new
entry into all five indexes per card (13 s, 1 GB of WAL for 1,000,000 cards);
without the index and with room on each page the same update is heap-only
(1.8 s).  Issuing finds in-stock cards through the batch index instead.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('cards', schema=None) as batch_op:
        batch_op.drop_index('ix_cards_state_batch')
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('ALTER TABLE cards SET (fillfactor = 50)')


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('ALTER TABLE cards RESET (fillfactor)')
    with op.batch_alter_table('cards', schema=None) as batch_op:
        batch_op.create_index('ix_cards_state_batch', ['state', 'batch_id'], unique=False)
