"""channel clients: a registered, revocable key per client; the client recorded on quotes and recharges

Each channel client (the hotline, a POS terminal, a partner) signs with a key
derived from the master key and its name, so this table holds no secret: a
name, its channel, who registered it and, once revoked, who did and why.
The hotline, which signed with the shared ``api.key`` before this revision,
is registered here so that an existing installation keeps a hotline client.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

import datetime as dt

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    clients = op.create_table('channel_clients',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_by', sa.String(length=64), nullable=True),
    sa.Column('reason', sa.String(length=200), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    with op.batch_alter_table('recharge_quotes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('client', sa.String(length=64), nullable=True))
    with op.batch_alter_table('recharges', schema=None) as batch_op:
        batch_op.add_column(sa.Column('client', sa.String(length=64), nullable=True))
    # Only where the installation already has operators: a new one registers its hotline at `init`.
    if op.get_bind().execute(sa.text('SELECT count(*) FROM operators')).scalar():
        op.bulk_insert(clients, [{'name': 'hotline', 'channel': 'hotline', 'created_by': 'migration 0007',
                                  'created_at': dt.datetime.now(dt.UTC)}])


def downgrade() -> None:
    with op.batch_alter_table('recharges', schema=None) as batch_op:
        batch_op.drop_column('client')
    with op.batch_alter_table('recharge_quotes', schema=None) as batch_op:
        batch_op.drop_column('client')
    op.drop_table('channel_clients')
