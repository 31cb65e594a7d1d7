"""Remote agents (`melt agent`, bench/agent.py): runs.target_agent (the agent a queued run is addressed to; NULL = a
worker on the machine that started it), runs.agent (the agent that took it), runs.cancel_requested (Cancel of a
run whose worker is on another host: its agent sends the SIGTERM), and the agents table (one row per agent name:
host, pid, heartbeat), so any host can tell a dead agent and reap its runs.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 01:15:00
"""
from alembic import op
import sqlalchemy as sa
import storage.models


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, never batch mode here: on SQLite a batch copy of `runs` drops the old table, and that DROP
    # cascades into every child row (see 0005).
    op.add_column('runs', sa.Column('target_agent', sa.String(length=100), nullable=True))
    op.add_column('runs', sa.Column('agent', sa.String(length=100), nullable=True))
    op.add_column('runs', sa.Column('cancel_requested', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index('ix_runs_target_agent', 'runs', ['target_agent'], unique=False)
    op.create_table('agents',
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('hostname', sa.String(length=200), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=True),
    sa.Column('started_at', storage.models.UtcDateTime(), nullable=False),
    sa.Column('heartbeat_at', storage.models.UtcDateTime(), nullable=False),
    sa.Column('stopped_at', storage.models.UtcDateTime(), nullable=True),
    sa.Column('version', sa.String(length=50), nullable=True),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_agents'))
    )


def downgrade() -> None:
    op.drop_table('agents')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('ix_runs_target_agent')
        batch_op.drop_column('cancel_requested')
        batch_op.drop_column('agent')
        batch_op.drop_column('target_agent')
