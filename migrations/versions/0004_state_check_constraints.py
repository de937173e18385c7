"""states: CHECK constraints limiting each state column to its enum's values

The card, quote, posting and issue-request states were plain VARCHAR(16);
now each column admits only the values of its enum in ``cardmgmt.states``
(the columns stay VARCHAR, so existing rows and the bulk ``COPY`` path are
untouched).  The values are written out here, as they were at this
revision: a later state needs a later revision that replaces the constraint.

PostgreSQL adds each constraint in place (one scan of the table to check
it).  SQLite cannot add a constraint to a table, so batch mode copies each
table into a new one that has it.  Dropping the old ``cards`` table would
count every quote and recharge that refers to a card as a foreign key
violation, so ``migrations/env.py`` runs revisions on SQLite with foreign
key enforcement off (as SQLite's documentation for such table changes
says), and this revision checks every reference once the copies are done.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

CARD_STATES = ('ordered', 'produced', 'in_stock', 'issued', 'redeemed', 'voided', 'frozen')

# (table, column, the values it may hold)
CONSTRAINTS = (
    ('cards', 'state', CARD_STATES),
    ('cards', 'prior_state', CARD_STATES),
    ('recharge_quotes', 'state', ('held', 'committed', 'cancelled', 'expired')),
    ('recharges', 'post_status', ('pending', 'posted', 'rejected')),
    ('issue_requests', 'status', ('pending', 'approved', 'rejected', 'collected', 'cancelled')),
)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _check_foreign_keys() -> None:
    """On SQLite, prove the table copies kept every reference whole (enforcement is off meanwhile)."""
    bind = op.get_bind()
    if bind.dialect.name == 'sqlite':
        broken = bind.exec_driver_sql('PRAGMA foreign_key_check').fetchall()
        if broken:
            raise RuntimeError(f'foreign keys broken by the table copy: {broken[:5]}')


def _tables() -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    by_table: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for table, column, values in CONSTRAINTS:
        by_table.setdefault(table, []).append((column, values))
    return by_table


def upgrade() -> None:
    for table, checks in _tables().items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column, values in checks:
                batch_op.create_check_constraint(f'ck_{table}_{column}', _one_of(column, values))
    _check_foreign_keys()


def downgrade() -> None:
    for table, checks in _tables().items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column, _ in checks:
                batch_op.drop_constraint(f'ck_{table}_{column}', type_='check')
    _check_foreign_keys()
