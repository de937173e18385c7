"""card sales: only a sold card can be redeemed; halls in a hierarchy; sales and returns recorded

A card issued to a hall is now ``issued`` until the hall sells it (``sold``),
and only sold cards can be redeemed.  ``sales`` records each sale (a run of
serials, the yuan the hall owes for it, its business day); ``card_returns``
records unsold cards given back to the warehouse.  Halls gain a level
(city, county, hall) and a parent.

Cards already issued to halls were redeemable before this revision, and
halls may have sold some without any record: they become ``sold`` with no
sale (``sale_id`` NULL), so no customer's card stops working, and no hall is
charged in a settlement for cards whose sale nobody recorded.  A frozen card
frozen from ``issued`` returns to ``sold`` for the same reason.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from alembic import op
import sqlalchemy as sa

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

OLD_STATES = ('ordered', 'produced', 'in_stock', 'issued', 'redeemed', 'voided', 'frozen')
NEW_STATES = ('ordered', 'produced', 'in_stock', 'issued', 'sold', 'redeemed', 'voided', 'frozen')
BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _card_checks(states: tuple[str, ...]) -> None:
    with op.batch_alter_table('cards', schema=None) as batch_op:
        for column in ('state', 'prior_state'):
            batch_op.drop_constraint(f'ck_cards_{column}', type_='check')
            batch_op.create_check_constraint(f'ck_cards_{column}', _one_of(column, states))


def _check_foreign_keys() -> None:
    bind = op.get_bind()
    if bind.dialect.name == 'sqlite':
        broken = bind.exec_driver_sql('PRAGMA foreign_key_check').fetchall()
        if broken:
            raise RuntimeError(f'foreign keys broken by the table copy: {broken[:5]}')


def upgrade() -> None:
    with op.batch_alter_table('halls', schema=None) as batch_op:
        batch_op.add_column(sa.Column('level', sa.String(length=16), nullable=False, server_default='hall'))
        batch_op.add_column(sa.Column('parent_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_halls_parent_id_halls', 'halls', ['parent_id'], ['id'])
        batch_op.create_index('ix_halls_parent_id', ['parent_id'], unique=False)
        batch_op.create_check_constraint('ck_halls_level', _one_of('level', ('city', 'county', 'hall')))
    op.create_table('sales',
    sa.Column('id', BigId, nullable=False),
    sa.Column('hall_id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('seller', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=80), nullable=True),
    sa.Column('first_serial', sa.String(length=12), nullable=False),
    sa.Column('last_serial', sa.String(length=12), nullable=False),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('sold_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.ForeignKeyConstraint(['hall_id'], ['halls.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key')
    )
    op.create_index('ix_sales_hall_day', 'sales', ['hall_id', 'day'], unique=False)
    op.create_index('ix_sales_day', 'sales', ['day'], unique=False)
    op.create_table('card_returns',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('hall_id', sa.Integer(), nullable=False),
    sa.Column('first_serial', sa.String(length=12), nullable=False),
    sa.Column('last_serial', sa.String(length=12), nullable=False),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('reason', sa.String(length=256), nullable=False),
    sa.Column('operator', sa.String(length=64), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['hall_id'], ['halls.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_card_returns_hall_id', 'card_returns', ['hall_id'], unique=False)
    with op.batch_alter_table('cards', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sale_id', BigId, nullable=True))
        batch_op.create_foreign_key('fk_cards_sale_id_sales', 'sales', ['sale_id'], ['id'])
        for column in ('state', 'prior_state'):
            batch_op.drop_constraint(f'ck_cards_{column}', type_='check')
            batch_op.create_check_constraint(f'ck_cards_{column}', _one_of(column, NEW_STATES))
    op.execute("UPDATE cards SET state = 'sold' WHERE state = 'issued'")
    op.execute("UPDATE cards SET prior_state = 'sold' WHERE prior_state = 'issued'")
    _check_foreign_keys()


def downgrade() -> None:
    op.execute("UPDATE cards SET state = 'issued', sale_id = NULL WHERE state = 'sold'")
    op.execute("UPDATE cards SET prior_state = 'issued' WHERE prior_state = 'sold'")
    with op.batch_alter_table('cards', schema=None) as batch_op:
        batch_op.drop_constraint('fk_cards_sale_id_sales', type_='foreignkey')
        batch_op.drop_column('sale_id')
    _card_checks(OLD_STATES)
    op.drop_index('ix_card_returns_hall_id', table_name='card_returns')
    op.drop_table('card_returns')
    op.drop_index('ix_sales_day', table_name='sales')
    op.drop_index('ix_sales_hall_day', table_name='sales')
    op.drop_table('sales')
    with op.batch_alter_table('halls', schema=None) as batch_op:
        batch_op.drop_constraint('ck_halls_level', type_='check')
        batch_op.drop_index('ix_halls_parent_id')
        batch_op.drop_constraint('fk_halls_parent_id_halls', type_='foreignkey')
        batch_op.drop_column('parent_id')
        batch_op.drop_column('level')
    _check_foreign_keys()
