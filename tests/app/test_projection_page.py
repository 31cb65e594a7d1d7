"""The Runs page's projection (bench/project.py) through AppTest, on a real stored vLLM run (the H200 lease's
docs/data/h200_engines history, migrated into a temporary SQLite file): a measured run projected onto another GPU
becomes a SIMULATED run labelled with where it came from, and Compare shows it beside the measurement."""
import gzip
import shutil
from pathlib import Path

from storage import queries as q
from tests.app.test_pages import _select_rows, app, ok, texts

ENGINES_DB = Path(__file__).resolve().parents[2] / "docs/data/h200_engines/melt_engines.db.gz"


def _history(tmp_path, monkeypatch) -> str:
    db = tmp_path / "engines.db"
    with gzip.open(ENGINES_DB) as src, open(db, "wb") as dst:
        shutil.copyfileobj(src, dst)
    monkeypatch.setenv("MELT_DB", str(db))
    monkeypatch.delenv("MELT_PASSWORD", raising=False)
    return str(db)


def test_a_measured_vllm_run_is_projected_onto_another_gpu(tmp_path, monkeypatch):
    db = _history(tmp_path, monkeypatch)
    at = ok(app("runs"))
    ids = list(at.dataframe[0].value["id"])
    ok(_select_rows(at, [ids.index(3)]))            # run 3: vLLM, Llama-3.1-8B at 1-512 users on an H200
    assert any(e.label == "Project onto other GPUs (SIMULATED)" for e in at.expander)
    at.multiselect(key="r_proj_3").set_value(["H100-SXM-80GB"]).run()
    at.button(key="r_proj_go_3").click().run(timeout=300)    # the fit: ~30 s on 2 cores
    ok(at)
    md, made = at.session_state["r_proj_done_3"]
    assert "H100-SXM-80GB tok/s" in md and set(made) == {"H100-SXM-80GB"}
    new = q.get_run(made["H100-SXM-80GB"], db)
    assert new.run.simulated and new.run.projected_from == 3 and [lv.concurrency for lv in new.levels] == [1, 16, 128, 512]
    # the history table says what it is
    at = ok(app("runs"))
    table = at.dataframe[0].value
    assert "PROJECTED from #3 (SIMULATED)" in set(table["data"])
    # Compare: the measurement and its projection, the projection's own expected error in the caption
    at = ok(app("compare", runs=f"3,{new.run.id}"))
    page = texts(at).replace("\\", "")           # markdown-escaped on the page
    assert "projected from #3" in page and "PROJECTED (simulated) from run #3 on H200-141GB to H100-SXM-80GB" in page
    assert "projection check: expected error" in page
    # its own page: SIMULATED, where it came from, no telemetry or engine of its own and no error for it
    at = ok(app("live", run=new.run.id))
    page = texts(at).replace("\\", "")
    assert "PROJECTED (simulated) from run #3" in page
    # and the CLI's view of it
    from bench.cli import main

    assert main(["--db", db, "show", str(new.run.id)]) == 0


def test_runs_that_cannot_be_projected_say_why(tmp_path, monkeypatch):
    _history(tmp_path, monkeypatch)
    at = ok(app("runs"))
    ids = list(at.dataframe[0].value["id"])
    ok(_select_rows(at, [ids.index(1)]))            # run 1: SGLang
    assert "Cannot project this run" in texts(at) and "vLLM only" in texts(at)
