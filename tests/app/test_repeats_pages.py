"""Repeated levels on the pages: Live's Levels tab and Compare's side-by-side table show mean ± 95% CI, beside the
steady-state columns. Runs written through the Recorder into a real SQLite file."""
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from bench.config import RunConfig
from bench.runs import create_run
from engines.spec import EngineSpec
from storage.models import LevelStatus, RunStatus
from storage.recorder import Recorder

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


def _repeated_run(db, toks: list[float]) -> int:
    cfg = RunConfig(name="repeated", levels=[8], repeat=len(toks),
                    engine=EngineSpec(kind="sim", model="Qwen/Qwen3-0.6B", sim_gpu="H100-SXM-80GB"))
    run_id = create_run(cfg, db)
    rec = Recorder(run_id, db)
    rec.set_status(RunStatus.running)
    for k, tok in enumerate(toks):
        lid = rec.start_level(k, 8, None, None, repeat=k)
        steady = {"window": True, "duration_s": 30.0, "output_tok_s": tok * 1.1, "req_s": 1.0,
                  "ttft_ms": {"mean": 20.0, "p50": 20.0}, "tpot_ms": {"mean": 2.0, "p50": 2.0}}
        rec.finish_level(lid, LevelStatus.completed, {
            "concurrency": 8, "n_sent": 10, "n_ok": 10, "n_err": 0, "duration_s": 35.0, "output_tok_s": tok,
            "ttft_ms": {"mean": 21.0, "p50": 21.0}, "tpot_ms": {"mean": 2.1, "p50": 2.1}, "steady": steady,
            "repeat": k})
    rec.set_status(RunStatus.completed)
    return run_id


def _app(monkeypatch, db, page: str, **query) -> AppTest:
    monkeypatch.setenv("MELT_DB", str(db))
    monkeypatch.delenv("MELT_PASSWORD", raising=False)
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.query_params.update(query)
    at.run()
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_live_levels_show_steady_columns_and_intervals(db, monkeypatch):
    rid = _repeated_run(db, [100.0, 110.0, 120.0])
    at = _app(monkeypatch, db, "live", run=str(rid))
    frames = [df.value for df in at.dataframe]
    levels = next(f for f in frames if "steady output tok/s" in f.columns)   # the readable table (bench.tables)
    assert list(levels["repeat"]) == ["1", "2", "3"]
    assert float(str(levels["steady output tok/s"].iloc[0]).replace(",", "")) == pytest.approx(110.0)
    reps = next(f for f in frames if "out tok/s (whole)" in f.columns)
    assert reps["repeats"].iloc[0] == 3
    assert reps["out tok/s (whole)"].iloc[0] == "110.0 ± 24.8"     # t(0.975, 2) = 4.303, s = 10, n = 3
    assert reps["out tok/s (steady)"].iloc[0].startswith("121.0 ± ")


def test_compare_side_by_side_shows_intervals(db, monkeypatch):
    a, b = _repeated_run(db, [100.0, 110.0, 120.0]), _repeated_run(db, [200.0, 200.0])
    at = _app(monkeypatch, db, "compare", runs=f"{a},{b}")
    side = next(df.value for df in at.dataframe if "configuration" in df.value.columns)
    assert list(side["out tok/s (whole)"]) == ["110.0 ± 24.8", "200.0 ± 0.0"]
    assert list(side["repeats"]) == [3, 2]
