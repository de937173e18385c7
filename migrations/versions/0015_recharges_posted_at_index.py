"""recharges: an index on posted_at, for the outbox's backlog hour by hour (reports.hourly)

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30
"""

from alembic import op


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_recharges_posted_at', 'recharges', ['posted_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_recharges_posted_at', table_name='recharges')
