"""The Blitz and Leaderboard pages through AppTest, against a real SQLite history with seeded Blitz runs (results
written by bench.blitz_run as the worker writes them)."""
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.perf.seed import seed_blitz
from storage import queries as q

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


@pytest.fixture
def blitz_db(db_path, monkeypatch):
    monkeypatch.setenv("MELT_DB", str(db_path))
    monkeypatch.delenv("MELT_PASSWORD", raising=False)
    ids = {"h200_a": seed_blitz(db_path, gpu="H200-141GB", speed=1.0, seed=1),
           "h200_b": seed_blitz(db_path, gpu="H200-141GB", speed=1.2, seed=2, health="WARN"),
           "h100": seed_blitz(db_path, gpu="H100-SXM-80GB", speed=0.7, seed=3),
           "sim": seed_blitz(db_path, gpu="H100-SXM-80GB", engine="sim", simulated=True,
                             speed=3.0, seed=4)}
    return db_path, ids


def page(name: str, **query) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.query_params.update({k: str(v) for k, v in query.items()})
    at.run()
    at.switch_page(f"views/{name}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [t.value for t in at.title]
    parts += [h.value for h in at.subheader]
    parts += [w.value for w in at.warning] + [e.value for e in at.error] + [i.value for i in at.info]
    return "\n".join(parts)


def test_blitz_page_shows_the_newest_result(blitz_db):
    db, ids = blitz_db
    at = page("blitz")
    res = q.blitz_results(db)[0]["result"]
    assert q.blitz_results(db)[0]["run_id"] == ids["sim"]
    metrics = {m.label: m.value for m in at.metric}
    assert "Blitz score (SIMULATED)" in metrics and metrics["GPU health (SIMULATED)"] == "PASS"
    assert metrics["Blitz score (SIMULATED)"].replace(",", "").startswith(str(round(res["score_output_tok_s"]))[:3])
    assert metrics["Roofline share"] == f"{100 * res['roofline_share']:.1f}%"
    assert "SIMULATED" in texts(at) and "saturated\\: doubling 16" in texts(at)
    assert len(at.get("plotly_chart")) == 1                      # power / temperature / clocks
    assert at.button(key="b_start") is not None and at.selectbox(key="b_engine").options == ["sim"]


def test_blitz_page_opens_a_run_by_id_and_refuses_other_runs(blitz_db):
    db, ids = blitz_db
    at = page("blitz", run=ids["h200_b"])
    metrics = {m.label: m.value for m in at.metric}
    assert "Blitz score" in metrics and metrics["GPU health"] == "WARN"      # measured: no SIMULATED label
    assert "thermal slowdown" in texts(at)
    from tests.app.seed import seed_run

    other = seed_run(db, name="plain sweep", levels=(1, 4), requests_per_level=10)
    at = page("blitz", run=other)
    assert f"Run {other} is not a Blitz run" in texts(at)


def test_blitz_button_starts_a_simulated_blitz_run(blitz_db, monkeypatch):
    import bench.runs

    started = []
    monkeypatch.setattr(bench.runs, "spawn_worker", lambda run_id, db=None, **kw: started.append(run_id) or 1)
    db, _ = blitz_db
    at = page("blitz")
    at.selectbox(key="b_gpu").select("H200-141GB").run()
    at.number_input(key="b_minutes").set_value(1.0).run()
    at.button(key="b_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(started) == 1
    d = q.get_run(started[0], db)
    assert d.run.status == "queued" and d.run.simulated and "blitz" in d.run.tags
    assert d.config["blitz"]["minutes"] == 1.0 and d.config["engine"]["sim_gpu"] == "H200-141GB"
    assert at.query_params["run"] == str(started[0])


def test_leaderboard_ranks_gpus_and_keeps_simulated_apart(blitz_db):
    db, ids = blitz_db
    at = page("leaderboard")
    assert not at.exception
    frames = [df.value for df in at.dataframe]
    real = next(f for f in frames if "rank" in f.columns and "H200-141GB" in list(f["GPU"]))
    assert list(real["GPU"]) == ["H200-141GB", "H100-SXM-80GB"] and list(real["runs"]) == [2, 1]
    assert real.iloc[0]["health"].startswith("WARN") and real.iloc[0]["best run"] == f"#{ids['h200_b']}"
    assert "580.65" in real.iloc[0]["drivers"]
    sim = next(f for f in frames if "rank" in f.columns and f is not real)
    assert list(sim["GPU"]) == ["H100-SXM-80GB"] and list(sim["runs"]) == [1]
    assert "Simulated GPUs (SIMULATED" in texts(at)
    figs = at.get("plotly_chart")
    assert len(figs) == 2
    assert any("SIMULATED" in f.proto.spec for f in figs)


def test_leaderboard_without_blitz_runs(db_path, monkeypatch):
    monkeypatch.setenv("MELT_DB", str(db_path))
    monkeypatch.delenv("MELT_PASSWORD", raising=False)
    at = page("leaderboard")
    assert "No Blitz run in this history yet" in texts(at)


def test_live_shows_a_blitz_run_with_its_levels_as_the_plan(blitz_db):
    db, ids = blitz_db
    at = page("live", run=ids["h200_a"])
    d = q.get_run(ids["h200_a"], db)
    assert len(d.levels) == 4
    assert "Blitz H200" in texts(at)
    # the plan of a Blitz is what ran: four levels, not the one its config plans up front
    from bench.runs import planned_for

    planned, dur = planned_for(d.config, [(lv.concurrency, lv.n_requested) for lv in d.levels])
    assert [c for c, _ in planned] == [lv.concurrency for lv in d.levels] and dur is None
    assert planned_for(d.config, []) == ([(8, None)], d.config["workload"]["min_steady_s"] + 5.0)


def test_blitz_page_compares_with_the_previous_run_and_runs_it_again(blitz_db, monkeypatch):
    import bench.runs

    db, ids = blitz_db
    at = page("blitz", run=ids["h200_b"])
    scores = {e["run_id"]: e["result"]["score_output_tok_s"] for e in q.blitz_results(db)}
    change = scores[ids["h200_b"]] / scores[ids["h200_a"]] - 1
    assert f"Against the previous Blitz of this GPU kind, engine, model and setup (#{ids['h200_a']}" in texts(at)
    assert f"{100 * change:+.1f}%, DISAGREES within 3%" in texts(at)
    at_first = page("blitz", run=ids["h200_a"])                      # nothing earlier on an H200 with vLLM
    assert "Against the previous Blitz" not in texts(at_first)
    started = []
    monkeypatch.setattr(bench.runs, "spawn_worker", lambda run_id, db=None, **kw: started.append(run_id) or 1)
    at.button(key=f"b_again_{ids['h200_b']}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(started) == 1
    new = q.get_run(started[0], db)
    assert new.run.gpu == "H200-141GB" and new.run.engine_kind == "vllm" and "blitz" in (new.run.tags or [])


def test_run_this_blitz_again_shows_a_stored_command_and_asks_first(blitz_db, monkeypatch):
    """A Blitz run from someone else's history file: its engine command is code this machine would run."""
    import bench.runs
    from storage.db import open_db
    from storage.models import Run

    db, ids = blitz_db
    target = ids["h200_a"]
    with open_db(db)() as s:
        run = s.get(Run, target)
        run.config = {**run.config, "engine": {**run.config["engine"],
                                               "engine_cmd": ["/bin/sh", "-c", "touch /tmp/pwned"]}}
        s.commit()
    started = []
    monkeypatch.setattr(bench.runs, "spawn_worker", lambda run_id, db=None, **kw: started.append(run_id) or 1)
    at = page("blitz", run=target)
    at.button(key=f"b_again_{target}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert started == [] and "launches this command" in texts(at)
    assert any("/bin/sh -c 'touch /tmp/pwned'" in c.value for c in at.code)
    at.button(key=f"b_again_no_{target}").click().run()
    assert started == [] and "launches this command" not in texts(at)
    at.button(key=f"b_again_{target}").click().run()
    at.button(key=f"b_again_yes_{target}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(started) == 1
    again = q.get_run(started[0], db)
    assert again.config["engine"]["engine_cmd"][0] == "/bin/sh" and again.config["blitz"] == run.config["blitz"]
