"""POS terminals: a channel client of channel ``pos`` is bound to the hall whose cards it sells

``channel_clients.hall_id`` names the one hall a POS terminal sells for
(``cli.py client add NAME --channel pos --hall H01``); only a ``pos`` client
may have one.  A ``pos`` client registered before this revision has none
and cannot sell until it is registered again with a hall (it can still
recharge, as before).

Operators' roles are now held to the operators' own roles by a CHECK
constraint: the ``terminal`` role, under which a POS terminal's sale runs,
is never an operator's.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

from alembic import op
import sqlalchemy as sa

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

OPERATOR_ROLES = ('admin', 'finance', 'auditor')


def upgrade() -> None:
    with op.batch_alter_table('channel_clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('hall_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_channel_clients_hall_id_halls', 'halls', ['hall_id'], ['id'])
        batch_op.create_check_constraint('ck_channel_clients_hall_id', "hall_id IS NULL OR channel = 'pos'")
    with op.batch_alter_table('operators', schema=None) as batch_op:
        batch_op.create_check_constraint(
            'ck_operators_role', f"role IN ({', '.join(repr(r) for r in OPERATOR_ROLES)})"
        )


def downgrade() -> None:
    with op.batch_alter_table('operators', schema=None) as batch_op:
        batch_op.drop_constraint('ck_operators_role', type_='check')
    with op.batch_alter_table('channel_clients', schema=None) as batch_op:
        batch_op.drop_constraint('ck_channel_clients_hall_id', type_='check')
        batch_op.drop_constraint('fk_channel_clients_hall_id_halls', type_='foreignkey')
        batch_op.drop_column('hall_id')
