"""Runs stored before prompt formats existed say which format they used: token ids for the completions endpoint,
text for chat. Without this, the new default ("text") would label every old run as text.

Data only (runs.config JSON); no schema change.

Revision ID: 0004
Revises: 0003_user_repeat
Create Date: 2026-12-01 22:20:00
"""
import json

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003_user_repeat'
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    runs = sa.table('runs', sa.column('id', sa.Integer), sa.column('config', sa.JSON))
    for rid, cfg in conn.execute(sa.select(runs.c.id, runs.c.config)).all():
        if isinstance(cfg, str):
            cfg = json.loads(cfg)
        if not isinstance(cfg, dict):
            continue
        wl = cfg.get('workload')
        if not isinstance(wl, dict) or 'prompt_format' in wl:
            continue
        wl['prompt_format'] = 'text' if wl.get('endpoint') == 'chat' else 'token-ids'
        conn.execute(runs.update().where(runs.c.id == rid).values(config=cfg))


def downgrade() -> None:
    pass  # the key is harmless to older code reading the JSON
