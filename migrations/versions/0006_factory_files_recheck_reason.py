"""factory_files: the reason a batch's further post-production file was checked

A batch's first post-production file is checked as before; another file for
the same batch is checked only when the operator says why, and that reason
is kept on the file's record (and in the operation log).  Files checked
before this revision have none.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from alembic import op
import sqlalchemy as sa

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('factory_files', schema=None) as batch_op:
        batch_op.add_column(sa.Column('recheck_reason', sa.String(length=256), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('factory_files', schema=None) as batch_op:
        batch_op.drop_column('recheck_reason')
