"""A deployment of several instances on the pages: a real sim mix swept by `./melt sweep --recipe` into the app's
history, then Live, Compare and Cost show per-instance and whole-box figures; Launch loads a recipe."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from storage import queries as q
from storage.db import open_db
from storage.models import Request
from tests.app.seed import seed_run
from tests.app.test_pages import app, ok, texts

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def mix_db(db_path, tmp_path, monkeypatch):
    monkeypatch.setenv("MELT_DB", str(db_path))
    monkeypatch.delenv("MELT_PASSWORD", raising=False)
    f = tmp_path / "two-sim.yaml"
    f.write_text(yaml.safe_dump({"name": "two-sim", "gpu": "H100-SXM-80GB", "instances": [
        {"name": "big", "engine": "sim", "model": "Qwen/Qwen3-0.6B", "share": 0.4, "weight": 3},
        {"name": "small", "engine": "sim", "model": "melt/tiny-qwen3", "share": 0.4, "weight": 1}]}))
    r = subprocess.run([sys.executable, "-m", "bench", "--db", str(db_path), "sweep", "--recipe", str(f), "--levels",
                        "2,4", "--requests", "16", "--input-len", "32", "--output-len", "8", "--telemetry-hz", "0"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "per instance and whole box" in r.stdout
    mix = q.list_runs(db_path)[0].id
    # the two instances serve models of different vocabularies (151,936 and 32,000): each request's prompt was made
    # with its own instance's tokenizer, so the server counts the 32 tokens asked (a prompt made with the other
    # tokenizer would be far off; the prompt maker may miss by a token or two now and then: prompts_inexact)
    with open_db(db_path)() as s:
        rows = s.query(Request.instance_id, Request.input_tokens, Request.ok).all()
    assert all(ok for _, _, ok in rows)
    for iid in {iid for iid, _, _ in rows}:
        mine = [n for i, n, _ in rows if i == iid]
        assert sum(n == 32 for n in mine) >= 0.8 * len(mine) and all(abs(n - 32) <= 3 for n in mine), (iid, mine)
    assert len({iid for iid, _, _ in rows}) == 2
    return db_path, mix


def _mix_frame(at):
    return next(df.value for df in at.dataframe if "instance" in df.value.columns and "requests %" in df.value.columns)


def test_live_shows_each_instance_and_the_whole_box(mix_db):
    _, rid = mix_db
    at = ok(app("live", run=rid))
    insts = next(df.value for df in at.dataframe if "startup s" in df.value.columns)
    assert list(insts["instance"]) == ["big", "small"] and set(insts["state"]) == {"stopped"}
    mix = _mix_frame(at)
    assert list(mix["instance"])[:3] == ["big", "small", "whole box"]
    assert list(mix["requests %"])[:2] == ["75.0", "25.0"]  # 12 of 16 and 4 of 16: the 3:1 weights
    assert "SIMULATED" in texts(at)


def test_cost_and_compare_show_the_box_price_and_the_instances(mix_db):
    db, rid = mix_db
    other = seed_run(db, levels=(1, 4), requests_per_level=20)
    at = ok(app("cost", run=rid))
    mix = _mix_frame(at)
    box = mix[mix["instance"] == "whole box"]
    d = q.get_run(rid)
    assert box["$/1M out tok"].iloc[0] == pytest.approx(
        d.run.price_per_gpu_hour / 3600 / d.levels[0].output_tok_s * 1e6)
    assert mix[mix["instance"] != "whole box"]["$/1M out tok"].isna().all()
    at = ok(app("compare", runs=f"{rid},{other}"))
    assert list(_mix_frame(at)["instance"])[:3] == ["big", "small", "whole box"]


def test_launch_loads_a_recipe(db_path, monkeypatch):
    monkeypatch.setenv("MELT_DB", str(db_path))
    monkeypatch.delenv("MELT_PASSWORD", raising=False)
    at = ok(app("launch"))
    at.selectbox(key="l_recipe").set_value("dwani-llm-pair").run()
    ok(at)
    rows = next(df.value for df in at.dataframe if "traffic %" in df.value.columns)
    assert list(rows["instance"]) == ["gemma", "qwen3"] and list(rows["traffic %"]) == ["70", "30"]
    assert "Planned on H200" in texts(at)
    assert "2 instances" in texts(at)  # the Ready line above the form
    at.toggle(key="l_dummy_weights").set_value(True).run()  # shown for a recipe: applies to its real instances
    ok(at)
    assert not at.error


def test_open_in_launch_of_a_mix_run_from_a_recipe_file_says_so(mix_db):
    _, rid = mix_db  # "two-sim" came from a file, not a bundled recipe
    at = ok(app(**{"from": rid}))
    assert "not a bundled recipe" in texts(at)
    assert at.selectbox(key="l_recipe").value == ""


def test_live_shows_the_services_own_traffic(db_path, tmp_path, monkeypatch):
    from tests.integration.test_services import ECHO_SERVICE, SIM, _service

    monkeypatch.setenv("MELT_DB", str(db_path))
    monkeypatch.delenv("MELT_PASSWORD", raising=False)
    cmd = [sys.executable, "-c", ECHO_SERVICE, "{port}", str(tmp_path / "seen.jsonl")]
    f = tmp_path / "svc.yaml"
    f.write_text(yaml.safe_dump({"name": "svc", "gpu": "H100-SXM-80GB", "instances": [SIM], "services": [
        _service("<b>tts</b>", cmd, request={"path": "/translate", "body": {"t": "x"}, "rate": 20})]}))
    r = subprocess.run([sys.executable, "-m", "bench", "--db", str(db_path), "sweep", "--recipe", str(f), "--levels",
                        "2", "--duration", "1", "--input-len", "16", "--output-len", "4", "--telemetry-hz", "0"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    at = ok(app("live", run=q.list_runs(db_path)[0].id))
    svc = next(df.value for df in at.dataframe if "service" in df.value.columns)
    assert list(svc["service"]) == ["<b>tts</b>"]            # the user's name as given, in a dataframe cell
    assert int(svc["ok"].iloc[0]) == int(svc["sent"].iloc[0]) > 0 and svc["err"].iloc[0] == "0"
    assert "Services: their own traffic during each level" in texts(at) or any(
        "Services: their own traffic" in m.value for m in at.markdown)
