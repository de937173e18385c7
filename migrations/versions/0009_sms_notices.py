"""sms notices: one SMS notice per acknowledged posting, and its outbox state

Filled in the transaction that marks a recharge posted (or, later, a
reversal), drained into the SMS platform's interface table by
``marketing_iface.sms``.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('sms_notices',
    sa.Column('id', BigId, nullable=False),
    sa.Column('posting_ref', sa.String(length=24), nullable=False),
    sa.Column('recharge_id', BigId, nullable=True),
    sa.Column('account_no', sa.String(length=10), nullable=False),
    sa.Column('phone', sa.String(length=32), nullable=True),
    sa.Column('text', sa.String(length=500), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.String(length=256), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'sent', 'skipped', 'rejected')", name='ck_sms_notices_status'),
    sa.ForeignKeyConstraint(['recharge_id'], ['recharges.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('posting_ref'),
    sa.UniqueConstraint('recharge_id')
    )
    op.create_index('ix_sms_notices_due', 'sms_notices', ['status', 'next_attempt_at', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_sms_notices_due', table_name='sms_notices')
    op.drop_table('sms_notices')
