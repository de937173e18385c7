"""day_closes, recharge_days: each closed business day's recharges by channel, for the reports over long periods

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'day_closes',
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('closed_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('day'),
    )
    op.create_table(
        'recharge_days',
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('channel', sa.String(length=16), nullable=False),
        sa.Column('recharges', sa.BigInteger(), nullable=False),
        sa.Column('amount', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['day'], ['day_closes.day']),
        sa.PrimaryKeyConstraint('day', 'channel'),
    )


def downgrade() -> None:
    op.drop_table('recharge_days')
    op.drop_table('day_closes')
