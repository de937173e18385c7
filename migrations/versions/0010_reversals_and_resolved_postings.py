"""reversals (冲正) with finance approval and their own outbox; rejected postings can be resolved

``reversals`` holds one reversal per recharge at most (unique
``recharge_id``): who filed it and why, finance's decision, and, once
approved, the outbox state of its counter-entry (the columns of
``recharges``).  A posting the marketing system refused for good may now
be settled by a person outside the system: ``post_status`` gains
``resolved`` (recharges and reversals alike).

SQLite cannot replace a CHECK constraint in place, so batch mode copies
``recharges``; foreign keys are checked once the copy is done, as in 0004.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from alembic import op
import sqlalchemy as sa

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

OLD_POST_STATES = ('pending', 'posted', 'rejected')
NEW_POST_STATES = ('pending', 'posted', 'rejected', 'resolved')
REVERSAL_STATES = ('pending', 'approved', 'rejected')


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _check_foreign_keys() -> None:
    bind = op.get_bind()
    if bind.dialect.name == 'sqlite':
        broken = bind.exec_driver_sql('PRAGMA foreign_key_check').fetchall()
        if broken:
            raise RuntimeError(f'foreign keys broken by the table copy: {broken[:5]}')


def _post_status_check(values: tuple[str, ...]) -> None:
    with op.batch_alter_table('recharges', schema=None) as batch_op:
        batch_op.drop_constraint('ck_recharges_post_status', type_='check')
        batch_op.create_check_constraint('ck_recharges_post_status', _one_of('post_status', values))


def upgrade() -> None:
    _post_status_check(NEW_POST_STATES)
    op.create_table('reversals',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ref', sa.String(length=24), nullable=False),
    sa.Column('recharge_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('original_ref', sa.String(length=24), nullable=False),
    sa.Column('account_no', sa.String(length=10), nullable=False),
    sa.Column('card_serial', sa.String(length=12), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=256), nullable=False),
    sa.Column('filed_by', sa.String(length=64), nullable=False),
    sa.Column('filed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('decided_by', sa.String(length=64), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('decision_comment', sa.String(length=256), nullable=True),
    sa.Column('post_status', sa.String(length=16), nullable=True),
    sa.Column('post_attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('posted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.String(length=256), nullable=True),
    sa.CheckConstraint(_one_of('status', REVERSAL_STATES), name='ck_reversals_status'),
    sa.CheckConstraint(_one_of('post_status', NEW_POST_STATES), name='ck_reversals_post_status'),
    sa.ForeignKeyConstraint(['recharge_id'], ['recharges.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('recharge_id'),
    sa.UniqueConstraint('ref')
    )
    op.create_index('ix_reversals_due', 'reversals', ['post_status', 'next_attempt_at', 'id'], unique=False)
    op.create_index('ix_reversals_decided_at', 'reversals', ['decided_at'], unique=False)
    _check_foreign_keys()


def downgrade() -> None:
    op.drop_index('ix_reversals_decided_at', table_name='reversals')
    op.drop_index('ix_reversals_due', table_name='reversals')
    op.drop_table('reversals')
    # A resolved posting was a rejected one a person settled; before this revision it stays rejected.
    op.execute("UPDATE recharges SET post_status = 'rejected' WHERE post_status = 'resolved'")
    _post_status_check(OLD_POST_STATES)
    _check_foreign_keys()
