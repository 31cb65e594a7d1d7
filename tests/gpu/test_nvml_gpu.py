"""Real NVML on a real GPU (the lent GPU machine): `python3 -m pytest -m gpu tests/gpu`. Skipped without NVML.

Only pynvml + stdlib are needed (torch, where present, is used to put a process on the GPU)."""
import os
import time

import pytest

from telemetry import nvml
from telemetry.energy import decode_throttle
from telemetry.sampler import ROW_KEYS, NvmlSource, TelemetrySampler, make_source

_ok, _reason = nvml.nvml_status()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _ok, reason=f"no NVML: {_reason}")]


def test_status_and_list():
    ok, reason = nvml.nvml_status()
    assert ok and "driver" in reason
    gpus = nvml.list_gpus()
    assert gpus and gpus[0]["index"] == 0 and gpus[0]["uuid"].startswith("GPU-")
    assert gpus[0]["memory_total_mb"] > 1000 and gpus[0]["driver"] and gpus[0]["cuda"]
    print("\n", gpus)


def test_read_sample_real_values():
    a = nvml.read_sample(0)
    time.sleep(0.3)
    b = nvml.read_sample(0)
    assert set(b) == set(nvml.SAMPLE_KEYS) and b["gpu_index"] == 0
    assert b["power_w"] > 0 and b["power_avg_w"] > 0 and b["mem_total_mb"] > 1000
    assert b["temp_gpu_c"] > 0 and b["sm_clock_mhz"] > 0 and b["throttle_reasons"] is not None
    assert b["energy_j"] >= a["energy_j"] > 0
    by_uuid = nvml.read_sample(b["gpu_uuid"])
    assert by_uuid["gpu_index"] == 0 and by_uuid["gpu_uuid"] == b["gpu_uuid"]
    facts = nvml.health_facts(0)
    if facts.get("gpm_supported"):
        assert b["sm_active"] is not None and b["tensor_active"] is not None  # second GPM sample has a rate
    print("\nsample:", b, "\nreasons:", decode_throttle(b["throttle_reasons"]))
    print("unsupported here:", sorted(k for k, v in b.items() if v is None))


def test_health_facts():
    f = nvml.health_facts(0)
    assert f["available"] and f["index"] == 0 and f["driver"]
    assert f["max_sm_clock_mhz"] > 0 and f["power_limit_w"] > 0 and f["power_limit_default_w"] > 0
    print("\nfacts:", f)


def test_sampler_on_real_gpu():
    src, msg = make_source("vllm", None, [0])
    assert isinstance(src, NvmlSource), msg
    rows = []
    s = TelemetrySampler(src, hz=10.0, on_batch=rows.extend, batch_s=0.5)
    s.start()
    time.sleep(2.0)
    stats = s.stop()
    assert stats["errors"] == 0 and stats["samples"] >= 5 and len(rows) == stats["rows"]
    assert all(set(r) == set(ROW_KEYS) and r["simulated"] is False for r in rows)
    e = [r["energy_j"] for r in rows if r["energy_j"] is not None]  # read ~1 Hz (it costs ~4 ms CPU per read)
    assert len(e) >= 2 and e == sorted(e)
    assert all(r["power_w"] is not None for r in rows)
    facts = src.health_facts()
    assert list(facts) == ["0"] and facts["0"]["available"]
    print("\nsampler stats:", stats)


def test_xid_watcher_registers():
    seen = []
    w = nvml.XidWatcher(lambda g, x, t: seen.append((g, x, t)), gpus=[0], poll_ms=200)
    started = w.start()
    time.sleep(0.5)
    st = w.stop()
    assert started, w.reason
    assert st["registered"] == [0]
    print("\nxid watcher:", st, seen)


def test_gpu_processes_and_cuda_visible_mapping():
    uuid = nvml.list_gpus()[0]["uuid"]
    assert nvml.nvml_indices_for_cuda_visible(uuid) == [0]
    assert nvml.nvml_indices_for_cuda_visible("0", device_order="PCI_BUS_ID") == [0]
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    x = torch.ones(64 * 2**20, device="cuda")  # 256 MiB, keeps a CUDA context in this process
    torch.cuda.synchronize()
    procs = dict(nvml.gpu_processes())
    assert os.getpid() in procs, procs
    del x
