"""A finished run's chart frames stored once (bench.run_frames, table run_charts): the same frames as the full read,
remade when stale, gone with the run. On SQLite and on a real PostgreSQL server (the `db` fixture)."""
from datetime import timedelta

import pandas as pd
import pytest
from sqlalchemy import func, select

from app.perf.seed import seed_run
from bench import run_frames
from storage import queries as q
from storage.db import open_db
from storage.models import RunChart


def _same(a: dict, b: dict) -> None:
    for name in ("thr", "lat", "tel", "em", "eng_rate"):
        assert list(a[name].columns) == list(b[name].columns), name
        pd.testing.assert_frame_equal(a[name].reset_index(drop=True), b[name].reset_index(drop=True),
                                      check_dtype=False, obj=name)
    assert a["bands"] == b["bands"]


def _rows(db) -> int:
    with open_db(db)() as s:
        return s.scalar(select(func.count()).select_from(RunChart))


def test_stored_frames_equal_the_full_read(db):
    rid = seed_run(db, levels=(1, 8, 64), requests_per_level=200, error_rate=0.05, seed=3)
    full = run_frames.compute(rid, db)
    assert len(full["thr"]) and len(full["lat"]) and len(full["tel"]) and len(full["em"]) and full["bands"]
    assert _rows(db) == 0
    first = run_frames.finished_frames(rid, db)                   # no row yet: the full read, then stored
    _same(first, full)
    assert _rows(db) == 1
    text = q.load_run_charts(rid, run_frames.VERSION, q.get_run(rid, db).run.finished_at, db)
    assert text is not None
    _same(run_frames.loads(text), full)
    _same(run_frames.finished_frames(rid, db), full)             # from the row
    assert _rows(db) == 1


def test_stale_rows_are_not_served(db):
    rid = seed_run(db, levels=(1, 8), requests_per_level=50, seed=4)
    run = q.get_run(rid, db).run
    run_frames.store(rid, db)
    assert q.load_run_charts(rid, run_frames.VERSION + 1, run.finished_at, db) is None   # another frame layout
    assert q.load_run_charts(rid, run_frames.VERSION, run.finished_at + timedelta(seconds=1), db) is None
    # a wrong stored row (another finish time) is replaced on the next view
    q.save_run_charts(rid, run_frames.VERSION, run.finished_at - timedelta(days=1), '{"not": "frames"}', db)
    _same(run_frames.finished_frames(rid, db), run_frames.compute(rid, db))
    assert q.load_run_charts(rid, run_frames.VERSION, run.finished_at, db) is not None


def test_active_runs_are_not_stored_and_deleting_a_run_deletes_its_frames(db):
    live = seed_run(db, levels=(1, 8), requests_per_level=50, status="running", seed=5)
    assert run_frames.store(live, db) is None
    run_frames.finished_frames(live, db)
    assert _rows(db) == 0
    done = seed_run(db, levels=(1, 8), requests_per_level=50, seed=6)
    run_frames.store(done, db)
    assert _rows(db) == 1
    assert q.delete_run(done, db)
    assert _rows(db) == 0


def test_a_history_that_cannot_be_written_still_gets_its_frames(db, monkeypatch):
    rid = seed_run(db, levels=(1, 8), requests_per_level=50, seed=7)

    def refuse(*a, **k):
        raise OSError("attempt to write a readonly database")

    monkeypatch.setattr(q, "save_run_charts", refuse)
    _same(run_frames.finished_frames(rid, db), run_frames.compute(rid, db))
