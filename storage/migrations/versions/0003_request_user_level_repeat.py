"""requests.user: the global user index (0..C-1) of each request, so the steady-state window (bench/steady.py) can be
recomputed from the database; levels.repeat: which repeat of its (concurrency, rate) a level is (--repeat N)

Revision ID: 0003_user_repeat
Revises: 0002
Create Date: 2026-12-01 22:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003_user_repeat'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('user', sa.Integer(), nullable=True))
    with op.batch_alter_table('levels', schema=None) as batch_op:
        batch_op.add_column(sa.Column('repeat', sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('levels', schema=None) as batch_op:
        batch_op.drop_column('repeat')
    with op.batch_alter_table('requests', schema=None) as batch_op:
        batch_op.drop_column('user')
