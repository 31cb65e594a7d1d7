"""Modelled GPU telemetry: exact storage keys, idle vs busy behaviour, monotonic energy."""
import pytest

from catalog import get_gpu
from engines.sim.telemetry import GPU_KEYS, GpuTelemetryModel
from storage.models import TelemetrySample

H100 = get_gpu("H100-SXM-80GB")
TASK_KEYS = ["gpu_index", "gpu_uuid", "util_gpu", "util_mem", "mem_used_mb", "mem_total_mb", "power_w",
             "power_avg_w", "energy_j", "temp_gpu_c", "temp_mem_c", "sm_clock_mhz", "mem_clock_mhz",
             "throttle_reasons", "pstate"]


def test_keys_are_exactly_the_storage_columns():
    m = GpuTelemetryModel(H100, 0.0, 0.9)
    assert list(m.sample(1.0)) == TASK_KEYS == list(GPU_KEYS)
    assert set(GPU_KEYS) <= set(TelemetrySample.__table__.columns.keys())


def test_idle_then_busy():
    m = GpuTelemetryModel(H100, 0.0, 0.9)
    idle = m.sample(10.0)
    assert idle["util_gpu"] == 0 and idle["power_w"] == pytest.approx(0.1 * 700)
    assert idle["throttle_reasons"] & 0x1  # GPU idle
    assert idle["mem_used_mb"] == pytest.approx(0.9 * 80e9 / 2**20, rel=1e-3)
    assert idle["mem_total_mb"] == pytest.approx(80e9 / 2**20, rel=1e-3)
    # 2 s of back-to-back memory-bound steps (2.5 GB each in 1 ms = 2.5 TB/s)
    t = 10.0
    for _ in range(2000):
        m.on_step(t, t + 1e-3, 2.5e9, 1e12)
        t += 1e-3
    busy = m.sample(t - 0.0005)
    assert busy["util_gpu"] > 99
    assert 60 < busy["util_mem"] <= 100
    assert idle["power_w"] < busy["power_avg_w"] <= 700
    assert busy["sm_clock_mhz"] > idle["sm_clock_mhz"]
    assert busy["energy_j"] > idle["energy_j"] + 2 * 0.1 * 700
    assert busy["temp_gpu_c"] > idle["temp_gpu_c"]
    later = m.sample(t + 30.0)
    assert later["util_gpu"] == 0 and later["energy_j"] > busy["energy_j"]
    assert later["energy_j"] == pytest.approx(busy["energy_j"] + 0.1 * 700 * 30.0005, rel=1e-6)


def test_step_memory_is_bounded_without_sampling():
    m = GpuTelemetryModel(H100, 0.0, 0.9)
    for i in range(100_000):
        m.on_step(i * 1e-3, (i + 1) * 1e-3, 1e6, 1e9)
    assert len(m.steps) <= 2100


def test_instantaneous_power_while_steps_keep_finishing():
    """Samples land just after the last finished step (steps are recorded at their end): still busy power."""
    m = GpuTelemetryModel(H100, 0.0, 0.9)
    t = 5.0
    for _ in range(500):
        m.on_step(t, t + 2e-3, 2.5e9, 1e12)
        t += 2e-3
    just_after = m.sample(t + 1e-3)
    assert just_after["power_w"] > 0.5 * 700 and just_after["power_w"] == pytest.approx(just_after["power_avg_w"], rel=0.05)
    assert m.sample(t + 5.0)["power_w"] == pytest.approx(0.1 * 700)  # idle again once steps stop
