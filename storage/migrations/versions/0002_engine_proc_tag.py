"""engine_instances.proc_tag: the MELT_ENGINE_TAG of a launch, so a reaper finds every process of a dead
worker's engine (children that outlived their group leader included)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 13:50:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('engine_instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('proc_tag', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('engine_instances', schema=None) as batch_op:
        batch_op.drop_column('proc_tag')
