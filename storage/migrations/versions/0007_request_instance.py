"""requests.instance_id, engine_instances.name and .weight: which engine instance of the run's deployment served each request (a model mix sends a
level's requests to several instances by weight or round robin; per-instance level numbers are computed from it).

A plain nullable integer, not a foreign key: SQLite cannot add a column with a constraint without copying the
table, and the requests table is the biggest of all. The instance rows belong to the same run and go with it
(runs cascade to both). Rows written before this revision have NULL: their run had one instance. An instance's
name and weight are those of its deployment entry (bench.config.DeployedInstance).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 01:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('requests', sa.Column('instance_id', sa.Integer(), nullable=True))
    op.add_column('engine_instances', sa.Column('name', sa.String(length=100), nullable=True))
    op.add_column('engine_instances', sa.Column('weight', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('requests', schema=None) as batch_op:
        batch_op.drop_column('instance_id')
    with op.batch_alter_table('engine_instances', schema=None) as batch_op:
        batch_op.drop_column('weight')
        batch_op.drop_column('name')
