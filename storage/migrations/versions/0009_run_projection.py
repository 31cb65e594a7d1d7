"""runs.projection: a projected run's source and fit (bench/project.py, `./melt project`).

A projection is a simulated run made from a measured one: the sim's host constants fitted to the measured run's
levels, the GPU swapped. The column holds which run it came from (id, uuid, name, GPU), the fitted constants, the
fit's residual and the expected error in words, so every page can say "projected from run #N" without reading the
config. A nullable JSON column, added in place on SQLite and PostgreSQL; older rows have NULL (not a projection).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 22:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('runs', sa.Column('projection', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('projection')
