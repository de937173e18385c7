"""hall payments: what halls paid finance for the cards they sold (解交), and voids of mistaken payments

A hall owes the face value of the cards it sold each business day (from
``sales``); finance records what it paid in, day by day, against a bank-slip
reference.  Rows are never changed but for ``live_reference``, cleared when a
payment is voided by a counter-entry (see ``cardmgmt.models.HallPayment``).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from alembic import op
import sqlalchemy as sa

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('hall_payments',
    sa.Column('id', BigId, nullable=False),
    sa.Column('hall_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('reference', sa.String(length=64), nullable=False),
    sa.Column('live_reference', sa.String(length=64), nullable=True),
    sa.Column('voids_id', BigId, nullable=True),
    sa.Column('note', sa.String(length=256), nullable=True),
    sa.Column('recorded_by', sa.String(length=64), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('payment', 'void')", name='ck_hall_payments_kind'),
    sa.CheckConstraint("(kind = 'payment' AND amount > 0) OR (kind = 'void' AND amount < 0)",
                       name='ck_hall_payments_amount_sign'),
    sa.ForeignKeyConstraint(['hall_id'], ['halls.id'], ),
    sa.ForeignKeyConstraint(['voids_id'], ['hall_payments.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('voids_id')
    )
    op.create_index('ix_hall_payments_hall_day', 'hall_payments', ['hall_id', 'day'], unique=False)
    op.create_index('ix_hall_payments_day', 'hall_payments', ['day'], unique=False)
    op.create_index('uq_hall_payments_live_reference', 'hall_payments', ['hall_id', 'live_reference'], unique=True)


def downgrade() -> None:
    op.drop_index('uq_hall_payments_live_reference', table_name='hall_payments')
    op.drop_index('ix_hall_payments_day', table_name='hall_payments')
    op.drop_index('ix_hall_payments_hall_day', table_name='hall_payments')
    op.drop_table('hall_payments')
