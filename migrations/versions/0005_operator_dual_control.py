"""operators: dual control (pending operators, who asked for whom), password changes and lockouts

Adds to ``operators`` the columns that let a second administrator approve
new operators, role changes and re-enabling (``pending``, ``created_by``,
``enabled_by``, ``role_granted_by``), force a password change after someone
else chose the password, and lock an operator out after repeated wrong
passwords; and the ``operator_requests`` table.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('operators', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pending', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('created_by', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('enabled_by', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('role_granted_by', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('must_change_password', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('failed_logins', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('failed_since', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('locked_until', sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        'operator_requests',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('operator', sa.String(length=64), nullable=False),
        sa.Column('role', sa.String(length=16), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('reason', sa.String(length=256), nullable=False),
        sa.Column('requested_by', sa.String(length=64), nullable=False),
        sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('decided_by', sa.String(length=64), nullable=True),
        sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('decision_comment', sa.String(length=256), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('operator_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_operator_requests_operator'), ['operator'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('operator_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_operator_requests_operator'))
    op.drop_table('operator_requests')
    with op.batch_alter_table('operators', schema=None) as batch_op:
        for column in ('locked_until', 'failed_since', 'failed_logins', 'must_change_password',
                       'role_granted_by', 'enabled_by', 'created_by', 'pending'):
            batch_op.drop_column(column)
