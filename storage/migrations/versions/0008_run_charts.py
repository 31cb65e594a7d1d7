"""run_charts: a finished run's chart frames, bucketed, one row per run (storage.models.RunChart).

The first viewer of a finished 100k-request run read every request, telemetry and engine-metric row to draw its
Live charts (~0.8 s on the 2-core machine); with this row it reads one small JSON text instead. Derived data, so an
older history simply has none until a run's first view (or the worker's end of run) writes it. A new table only:
nothing is copied, on SQLite or PostgreSQL.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 05:00:00
"""
from alembic import op
import sqlalchemy as sa

from storage.models import UtcDateTime


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'run_charts',
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('finished_at', UtcDateTime(), nullable=True),
        sa.Column('created_at', UtcDateTime(), nullable=False),
        sa.Column('data', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_run_charts_run_id_runs'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('run_id', name=op.f('pk_run_charts')),
    )


def downgrade() -> None:
    op.drop_table('run_charts')
