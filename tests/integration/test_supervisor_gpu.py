"""The supervisor's GPU check on a real GPU (marker gpu; run on the lent GPU machine): an engine that holds GPU
memory and ignores SIGTERM is killed, NVML sees our pid holding memory before stop and nothing after."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from engines.spec import LaunchPlan
from engines.supervisor import EngineProcess, free_port

pytestmark = pytest.mark.gpu
FAKE = Path(__file__).with_name("fake_engine_server.py")


def _gpu_ready() -> str | None:
    try:
        from telemetry.nvml import nvml_status
    except ImportError as e:
        return f"telemetry.nvml missing: {e}"
    ok, why = nvml_status()
    if not ok:
        return why
    probe = subprocess.run([sys.executable, "-c", "import torch; assert torch.cuda.is_available()"],
                           capture_output=True, timeout=300)
    return None if probe.returncode == 0 else "torch with CUDA is not importable"


def test_gpu_memory_is_released_after_stop(tmp_path):
    why = _gpu_ready()
    if why:
        pytest.skip(why)
    from telemetry.nvml import gpu_processes

    port = free_port()
    plan = LaunchPlan(argv=[sys.executable, str(FAKE), "--port", str(port), "--gpu-mb", "1024", "--ignore-sigterm"],
                      port=port, served_model_name="fake-model")
    eng = EngineProcess(plan, tmp_path / "engine.log")
    try:
        eng.start()
        eng.wait_ready(timeout_s=300)
        holders = {pid for pid, _mem in gpu_processes()}
        print(f"\nNVML compute pids: {sorted(holders)}; engine pid {eng.pid}")
        visible = eng.pid in holders  # False inside a container without the host PID namespace
    finally:
        t0 = time.monotonic()
        report = eng.stop(grace_s=3)
        print(f"stop() in {time.monotonic() - t0:.1f} s -> {report}")
    assert report["nvml"] is True and report["killed"] is True and report["leftover_pids"] == []
    assert report["gpu_pids"] == []
    after = {pid for pid, _mem in gpu_processes()}
    assert eng.pid not in after
    if not visible:
        pytest.xfail("NVML pids are not this PID namespace's pids: the GPU check cannot attribute memory here")
