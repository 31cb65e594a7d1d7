"""A small tensor-parallel recipe served end to end on the simulator (`./melt sweep --recipe R --engine sim`): an 8B at
TP=2 written for vLLM and a 0.6B at DP=2 (two sim replicas), on a simulated 4-GPU box, with 3:1 weighted traffic.
Checks: every instance is a sim process with its TP, its GPU positions and the planner's KV tokens; the traffic
follows the weights (within 2 requests per instance per level, bench.loadgen.route_table's bound); the node's
SIMULATED telemetry covers all four GPUs; and nothing is left running afterwards. Loopback only, no GPU.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.plan import plan
from catalog import get_gpu, load_models
from catalog.recipes import parse_recipe
from storage.db import open_db
from storage.models import TelemetrySample
from tests.integration.test_mix import _instances, _nothing_left

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = 16   # per level
RECIPE = {"name": "sim-tp-mix", "gpu": "H100-SXM-80GB", "count": 4, "instances": [
    {"name": "q8b", "engine": "vllm", "model": "Qwen/Qwen3-8B", "tp": 2, "gpus": [0, 1], "max_model_len": 4096,
     "weight": 3},
    {"name": "small", "engine": "sglang", "model": "Qwen/Qwen3-0.6B", "dp": 2, "gpus": [2, 3], "max_model_len": 4096,
     "weight": 1}]}


@pytest.mark.timeout(300)
def test_tp_recipe_on_the_sim_with_weighted_traffic_leaves_nothing_running(tmp_path, db_path):
    f = tmp_path / "tp.yaml"
    f.write_text(yaml.safe_dump(RECIPE))
    r = subprocess.run([sys.executable, "-m", "bench", "--db", str(db_path), "sweep", "--recipe", str(f),
                        "--engine", "sim", "--levels", "2,8", "--requests", str(REQUESTS), "--input-len", "64",
                        "--output-len", "8", "--telemetry-hz", "4", "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, r.stderr[-4000:]
    doc = json.loads(r.stdout)
    assert doc["status"] == "completed" and doc["simulated"] is True
    assert "SIMULATED: every instance on Melt's simulator" in r.stderr

    planned = {p.name: p for p in plan(parse_recipe(RECIPE), get_gpu("H100-SXM-80GB"), load_models(), count=4).instances}
    insts = _instances(db_path)
    assert [i.name for i in insts] == ["q8b", "small-dp0", "small-dp1"]
    want = {"q8b": ("2", "0,1", "q8b"), "small-dp0": ("1", "2", "small"), "small-dp1": ("1", "3", "small")}
    for i in insts:
        tp, gpus, planned_as = want[i.name]
        argv = i.argv
        assert i.kind == "sim" and i.state == "stopped" and i.ready_at is not None, (i.name, i.state, i.error)
        assert argv[argv.index("--tensor-parallel-size") + 1] == tp if tp != "1" else "--tensor-parallel-size" not in argv
        assert argv[argv.index("--gpu-indices") + 1] == gpus
        assert argv[argv.index("--kv-cache-tokens") + 1] == str(planned[planned_as].fit.kv_tokens)

    weights = {"q8b": 3 / 4, "small-dp0": 1 / 8, "small-dp1": 1 / 8}
    for lv in doc["levels"]:
        assert lv["n_sent"] == lv["n_ok"] == REQUESTS, lv.get("errors")
        per = lv["instances"]
        assert set(per) == set(weights)
        for name, share in weights.items():
            assert abs(per[name]["n_sent"] - REQUESTS * share) <= 2, (name, per[name]["n_sent"])
        assert lv["telemetry"]["simulated"] is True
    with open_db(db_path)() as s:
        seen = {g for (g,) in s.query(TelemetrySample.gpu_index).distinct()}
        assert seen == {0, 1, 2, 3}
        assert all(sim for (sim,) in s.query(TelemetrySample.simulated).distinct())
    _nothing_left(insts)
