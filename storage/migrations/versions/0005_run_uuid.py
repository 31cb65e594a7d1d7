"""runs.uuid: a run's identity across histories, so importing an export bundle (storage/bundle.py) recognizes a run
the history already has. Every existing run gets a fresh UUID here.

The column stays nullable in the schema: SQLite can only add a NOT NULL column with one constant default, and
making it NOT NULL afterwards means copying the runs table, whose DROP would cascade into every child row. Every
row has a value (this fill, then the model's default on insert); a unique index keeps them distinct.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 22:50:00
"""
import uuid

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('runs', sa.Column('uuid', sa.String(length=36), nullable=True))
    conn = op.get_bind()
    runs = sa.table('runs', sa.column('id', sa.Integer), sa.column('uuid', sa.String))
    for (rid,) in conn.execute(sa.select(runs.c.id).where(runs.c.uuid.is_(None))).all():
        conn.execute(runs.update().where(runs.c.id == rid).values(uuid=str(uuid.uuid4())))
    op.create_index('ix_runs_uuid', 'runs', ['uuid'], unique=True)


def downgrade() -> None:
    op.drop_index('ix_runs_uuid', table_name='runs')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('uuid')
