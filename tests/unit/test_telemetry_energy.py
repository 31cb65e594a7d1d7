"""Energy accounting on recorded series: the energy counter vs ∫P dt, window edges, throttle shares, totals.

The series are built like a real 4 Hz recording of an H100: idle ~70 W, a load window at ~700 W with ripple, an
energy counter that integrates the true power exactly (what the board measures), `power_w` = instantaneous samples
and `power_avg_w` = the driver's 1 s trailing average."""
import math

import pytest

from telemetry.energy import LIMITING_MASK, decode_throttle, summarize_window

S = 1_000_000_000
T0 = 1_795_000_000 * S  # a realistic wall-clock origin (ns)


def true_power(t: float) -> float:
    """Watts at t seconds: idle 70 W, load 700 W ± 60 W ripple (period 1.3 s) between 10 s and 50 s."""
    if 10 <= t < 50:
        return 700 + 60 * math.sin(2 * math.pi * t / 1.3)
    return 70.0


def exact_energy(a: float, b: float, step: float = 1e-3) -> float:
    n = int(round((b - a) / step))
    return sum(true_power(a + (i + 0.5) * step) for i in range(n)) * step


def recording(gpu: int = 0, hz: float = 4.0, dur: float = 60.0, counter: bool = True, throttle=None,
              simulated: bool = False, counter_base: float = 5.0e6, energy_every: int = 1):
    rows, e = [], counter_base
    n = int(dur * hz)
    prev_t = 0.0
    for i in range(n + 1):
        t = i / hz
        if i:
            e += exact_energy(prev_t, t, step=1e-3)
        prev_t = t
        avg = exact_energy(max(0.0, t - 1), t, 1e-2) / min(1.0, t) if t > 0 else 70.0
        rows.append({
            "t_ns": T0 + int(t * S), "gpu_index": gpu, "gpu_uuid": f"GPU-{gpu}", "simulated": simulated,
            "power_w": true_power(t), "power_avg_w": avg,
            "energy_j": e if counter and i % energy_every == 0 else None,
            "util_gpu": 100.0 if 10 <= t < 50 else 0.0, "temp_gpu_c": 40 + (25 if 10 <= t < 50 else 0) + t / 10,
            "temp_mem_c": 45.0, "sm_clock_mhz": 1755.0 if 10 <= t < 50 else 345.0, "mem_used_mb": 70000.0,
            "throttle_reasons": throttle(t) if throttle else (0x4 if 10 <= t < 50 else 0x1),
        })
    return rows


def test_energy_counter_matches_integral_of_power():
    rows = recording()
    out = summarize_window(rows, T0 + 10 * S, T0 + 50 * S, output_tokens=400_000)
    g = out["gpus"][0]
    exact = exact_energy(10, 50)
    assert g["energy_source"] == "counter" and out["energy_source"] == "counter"
    # The counter, interpolated to the window edges, is the board's own number: within 0.1% of the truth.
    assert g["energy_counter_j"] == pytest.approx(exact, rel=1e-3)
    # ∫P dt from 4 Hz instantaneous samples agrees within 1% on this ripple.
    assert g["energy_integrated_j"] == pytest.approx(exact, rel=0.01)
    # The 1 s trailing average lags the load edges: a larger error, which is why it is not the energy source.
    assert abs(g["energy_integrated_avg_j"] - exact) > abs(g["energy_integrated_j"] - exact)
    assert out["total"]["energy_j"] == pytest.approx(exact, rel=1e-3)
    assert out["total"]["avg_power_w"] == pytest.approx(exact / 40, rel=1e-3)
    assert out["total"]["peak_power_w"] == pytest.approx(760, abs=1.0)
    assert out["total"]["joules_per_output_token"] == pytest.approx(exact / 400_000, rel=1e-3)
    assert out["window_s"] == 40 and out["simulated"] is False
    # Window ends are inclusive: the idle sample at exactly t = 50 s counts (1 of 161 samples).
    assert g["avg_util_gpu"] == pytest.approx(100 * 160 / 161, abs=0.05) and g["n_samples"] == 161


def test_window_edges_between_samples_are_interpolated():
    rows = recording()
    a, b = 12.1, 31.37  # not on the 0.25 s sample grid
    out = summarize_window(rows, T0 + int(a * S), T0 + int(b * S), output_tokens=None)
    assert out["gpus"][0]["energy_j"] == pytest.approx(exact_energy(a, b), rel=2e-3)
    assert out["gpus"][0]["covered_s"] == pytest.approx(b - a, abs=1e-6)
    assert out["total"]["joules_per_output_token"] is None


def test_counter_read_once_a_second_like_nvml_source():
    # NvmlSource reads the (expensive) counter ~1 Hz: every 4th row has it, the window edges fall between readings.
    rows = recording(energy_every=4)
    out = summarize_window(rows, T0 + int(10.1 * S), T0 + int(49.9 * S), output_tokens=None)
    g = out["gpus"][0]
    assert g["energy_source"] == "counter"
    assert g["energy_j"] == pytest.approx(exact_energy(10.1, 49.9), rel=3e-3)
    # Last counter reading at 56 s, samples go on to 60 s: the tail past the last reading is filled with ∫P dt.
    for r in rows:
        if r["t_ns"] > T0 + 56 * S:
            r["energy_j"] = None
    out = summarize_window(rows, T0 + 50 * S, T0 + 70 * S, output_tokens=None)
    assert out["gpus"][0]["energy_source"] == "counter" and out["gpus"][0]["covered_s"] == pytest.approx(10.0)
    assert out["gpus"][0]["energy_j"] == pytest.approx(exact_energy(50, 60), rel=1e-3)


def test_without_counter_energy_is_integrated():
    rows = recording(counter=False)
    out = summarize_window(rows, T0 + 10 * S, T0 + 50 * S, output_tokens=1000)
    g = out["gpus"][0]
    assert g["energy_source"] == "integrated" and g["energy_counter_j"] is None
    assert g["energy_j"] == pytest.approx(exact_energy(10, 50), rel=0.01)


def test_counter_reset_falls_back_to_integration():
    rows = recording()
    for r in rows:  # driver reloaded at t = 30 s: the counter restarts near zero
        if r["t_ns"] >= T0 + 30 * S:
            r["energy_j"] -= 5.0e6
    out = summarize_window(rows, T0 + 10 * S, T0 + 50 * S, output_tokens=None)
    assert out["gpus"][0]["energy_source"] == "integrated"
    assert out["gpus"][0]["energy_j"] == pytest.approx(exact_energy(10, 50), rel=0.01)


def test_throttle_shares_are_time_weighted_and_decoded():
    def throttle(t):
        if not 10 <= t < 50:
            return 0x1                                   # idle: not "throttled"
        if 20 <= t < 24:
            return 0x4 | 0x40                            # power cap + HW thermal slowdown for 4 s
        return 0x4 if t < 40 else 0x0                    # at the power cap for most of the load
    out = summarize_window(recording(throttle=throttle), T0 + 10 * S, T0 + 50 * S, output_tokens=None)
    g = out["gpus"][0]
    assert g["throttled_pct"] == pytest.approx(75.0, abs=0.1)                 # 30 s of 40 s limited
    assert g["throttle_reasons_pct"]["hw_thermal_slowdown"] == pytest.approx(10.0, abs=0.1)
    assert g["throttle_reasons_pct"]["sw_power_cap"] == pytest.approx(75.0, abs=0.1)
    assert "gpu_idle" not in g["throttle_reasons_pct"]
    assert out["total"]["throttle_reasons"] == ["hw_thermal_slowdown", "sw_power_cap"]


def test_decode_throttle():
    assert decode_throttle(None) == [] and decode_throttle(0) == []
    assert decode_throttle(0x24) == ["sw_power_cap", "sw_thermal_slowdown"]
    assert decode_throttle(0x80 | 0x8) == ["hw_slowdown", "hw_power_brake_slowdown"]
    assert decode_throttle(0x1000) == ["bit_0x1000"]
    assert not LIMITING_MASK & 0x1 and LIMITING_MASK & 0x40


def test_two_gpus_totals_and_simulated_label():
    rows = recording(gpu=0, simulated=True) + recording(gpu=1, simulated=True, counter_base=1.0e6)
    out = summarize_window(rows, T0 + 10 * S, T0 + 50 * S, output_tokens=800_000)
    assert out["n_gpus"] == 2 and out["simulated"] is True
    e = exact_energy(10, 50)
    assert out["total"]["energy_j"] == pytest.approx(2 * e, rel=1e-3)
    assert out["total"]["peak_power_w"] == pytest.approx(2 * 760, abs=2.0)  # peak of per-tick sums
    assert out["total"]["joules_per_output_token"] == pytest.approx(2 * e / 800_000, rel=1e-3)
    assert out["total"]["peak_temp_gpu_c"] == pytest.approx(40 + 25 + 49.75 / 10)


def test_no_samples_gives_nones():
    out = summarize_window([], T0, T0 + S, output_tokens=10)
    assert out["n_gpus"] == 0 and out["total"]["energy_j"] is None
    assert out["total"]["joules_per_output_token"] is None and out["energy_source"] is None


def test_level_telemetry_json():
    import json

    from telemetry.level import level_telemetry

    rows = recording()
    lt = level_telemetry(rows, T0 + 10 * S, T0 + 50 * S, 400_000, xids=[(0, 79, T0 + 55 * S)], source_note="nvml")
    assert json.loads(json.dumps(lt)) == lt
    assert lt["energy_j"] == pytest.approx(exact_energy(10, 50), rel=1e-3) and lt["energy_source"] == "counter"
    assert lt["verdict"]["status"] == "PASS"          # the XID came after this level
    lt = level_telemetry(rows, T0 + 10 * S, T0 + 50 * S, 400_000, xids=[(0, 79, T0 + 20 * S)])
    assert lt["verdict"]["status"] == "FAIL" and "XID 79" in lt["verdict"]["reasons"][0]


def test_peak_is_at_least_the_averaged_reading():
    # 4 Hz instantaneous samples can all land between bursts (seen with the sim engine: power_w 70 W, 1 s average
    # 580 W): the peak is at least the averaged reading.
    rows = [{"t_ns": T0 + i * S // 4, "gpu_index": 0, "power_w": 70.0, "power_avg_w": 580.0 + i} for i in range(9)]
    out = summarize_window(rows, T0, T0 + 2 * S, output_tokens=None)
    assert out["gpus"][0]["peak_power_w"] == 588.0 and out["total"]["peak_power_w"] == 588.0


def test_level_summary_waits_for_the_samplers_last_batch():
    """The sampler hands rows over about once a second; a level summary taken right at the level's end must
    wait for the batch that covers the end, or the last second's energy is missing from J/token."""
    import threading
    import time

    from bench.sweep import _Telemetry

    class Sampler:  # the one thing level_summary asks of the sampler
        def is_alive(self):
            return True

    t0 = 1_000_000_000_000
    watts = 500.0
    row = lambda t: {"t_ns": t, "gpu_index": 0, "power_w": watts, "energy_j": None, "simulated": True}  # noqa: E731
    tel = _Telemetry(rec=None, log=print, sampler=Sampler())
    tel.samples = [row(t0 + i * 250_000_000) for i in range(38)]      # up to 9.25 s of a 10 s level
    end = t0 + 10_000_000_000

    def late_batch():
        time.sleep(0.4)
        with tel.lock:
            tel.samples.extend(row(t0 + i * 250_000_000) for i in range(38, 42))  # 9.5 .. 10.25 s

    threading.Thread(target=late_batch).start()
    summary = tel.level_summary(t0, end, output_tokens=1000)
    assert summary["energy_j"] == pytest.approx(5000, rel=0.01)          # 500 W x 10 s, not 4,625 J
    assert summary["joules_per_output_token"] == pytest.approx(5.0, rel=0.01)
