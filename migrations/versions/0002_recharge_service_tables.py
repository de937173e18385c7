"""recharge service tables

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 10:49:10.619893
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('leases',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('holder', sa.String(length=64), nullable=False),
    sa.Column('token', sa.BigInteger(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('pin_failures',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('caller', sa.String(length=32), nullable=False),
    sa.Column('account_no', sa.String(length=10), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('cleared_by', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('pin_failures', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pin_failures_account_no'), ['account_no'], unique=False)
        batch_op.create_index(batch_op.f('ix_pin_failures_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_pin_failures_caller'), ['caller'], unique=False)

    op.create_table('request_nonces',
    sa.Column('nonce', sa.String(length=64), nullable=False),
    sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('nonce')
    )
    with op.batch_alter_table('request_nonces', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_request_nonces_seen_at'), ['seen_at'], unique=False)

    op.create_table('server_heartbeats',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('address', sa.String(length=128), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('recharge_quotes',
    sa.Column('key', sa.String(length=80), nullable=False),
    sa.Column('call_id', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('caller', sa.String(length=32), nullable=False),
    sa.Column('account_no', sa.String(length=10), nullable=False),
    sa.Column('card_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('hold_until', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['card_id'], ['cards.id'], ),
    sa.PrimaryKeyConstraint('key')
    )
    with op.batch_alter_table('recharge_quotes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recharge_quotes_call_id'), ['call_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_recharge_quotes_hold_until'), ['hold_until'], unique=False)

    op.create_table('recharges',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('key', sa.String(length=80), nullable=False),
    sa.Column('call_id', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('caller', sa.String(length=32), nullable=False),
    sa.Column('card_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('card_serial', sa.String(length=12), nullable=False),
    sa.Column('account_no', sa.String(length=10), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('committed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('post_status', sa.String(length=16), nullable=False),
    sa.Column('post_attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('posted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.String(length=256), nullable=True),
    sa.ForeignKeyConstraint(['card_id'], ['cards.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('card_id'),
    sa.UniqueConstraint('key')
    )
    with op.batch_alter_table('recharges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recharges_account_no'), ['account_no'], unique=False)
        batch_op.create_index(batch_op.f('ix_recharges_committed_at'), ['committed_at'], unique=False)
        batch_op.create_index('ix_recharges_due', ['post_status', 'next_attempt_at', 'id'], unique=False)

    with op.batch_alter_table('cards', schema=None) as batch_op:
        batch_op.add_column(sa.Column('hold_key', sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column('hold_until', sa.DateTime(timezone=True), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('cards', schema=None) as batch_op:
        batch_op.drop_column('hold_until')
        batch_op.drop_column('hold_key')

    with op.batch_alter_table('recharges', schema=None) as batch_op:
        batch_op.drop_index('ix_recharges_due')
        batch_op.drop_index(batch_op.f('ix_recharges_committed_at'))
        batch_op.drop_index(batch_op.f('ix_recharges_account_no'))

    op.drop_table('recharges')
    with op.batch_alter_table('recharge_quotes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_recharge_quotes_hold_until'))
        batch_op.drop_index(batch_op.f('ix_recharge_quotes_call_id'))

    op.drop_table('recharge_quotes')
    op.drop_table('server_heartbeats')
    with op.batch_alter_table('request_nonces', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_request_nonces_seen_at'))

    op.drop_table('request_nonces')
    with op.batch_alter_table('pin_failures', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pin_failures_caller'))
        batch_op.drop_index(batch_op.f('ix_pin_failures_at'))
        batch_op.drop_index(batch_op.f('ix_pin_failures_account_no'))

    op.drop_table('pin_failures')
    op.drop_table('leases')
