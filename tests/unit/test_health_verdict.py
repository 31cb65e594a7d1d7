"""GPU health verdict on recorded series: 2 GPUs, 10 s idle, a 40 s load window, 10 s idle, facts at start and end
shaped like telemetry.nvml.health_facts() on an H100 SXM."""
import copy

import pytest

from telemetry.health import verdict

S = 1_000_000_000
T0 = 1_795_000_000 * S
LOAD = (T0 + 10 * S, T0 + 50 * S)


def facts(index: int, **over) -> dict:
    f = {
        "available": True, "t_ns": T0, "index": index, "uuid": f"GPU-{index}", "name": "NVIDIA H100 80GB HBM3",
        "driver": "580.159.04", "cuda": "13.0", "mig_mode": False, "ecc_mode": True,
        "ecc_volatile_corrected": 0, "ecc_volatile_uncorrected": 0, "ecc_aggregate_corrected": 3,
        "ecc_aggregate_uncorrected": 0, "retired_pages_sbe": 0, "retired_pages_dbe": 0, "retired_pages_pending": 0,
        "remapped_rows_correctable": 0, "remapped_rows_uncorrectable": 0, "remapped_rows_pending": False,
        "remapped_rows_failure": False, "pcie_replay_counter": 0, "pcie_link_gen": 5, "pcie_link_gen_max": 5,
        "pcie_link_width": 16, "pcie_link_width_max": 16, "power_limit_w": 700.0, "power_limit_default_w": 700.0,
        "power_limit_enforced_w": 700.0, "max_sm_clock_mhz": 1980, "max_mem_clock_mhz": 2619,
        "temp_slowdown_c": 87.0, "temp_shutdown_c": 92.0, "temp_gpu_max_c": 85.0, "temp_mem_max_c": 95.0,
        "violation_power": {"violation_ns": 10 * S, "reference_us": 0},
        "violation_thermal": {"violation_ns": 0, "reference_us": 0},
    }
    f.update(over)
    return f


def series(gpu: int, throttle=None, clock_load=1755.0, temp_load=68.0, hbm_load=72.0, util_load=98.0):
    rows = []
    for i in range(241):  # 60 s at 4 Hz
        t = i / 4
        load = 10 <= t <= 50
        rows.append({
            "t_ns": T0 + int(t * S), "gpu_index": gpu, "gpu_uuid": f"GPU-{gpu}", "simulated": False,
            "util_gpu": util_load if load else 0.0, "power_w": 690.0 if load else 72.0,
            "temp_gpu_c": temp_load if load else 38.0, "temp_mem_c": hbm_load if load else 41.0,
            "sm_clock_mhz": clock_load if load else 345.0,
            "throttle_reasons": throttle(t) if throttle else (0x4 if load else 0x1),
        })
    return rows


def run(samples=None, fs=None, fe=None, xids=None, windows=(LOAD,)):
    samples = series(0) + series(1) if samples is None else samples
    fs = [facts(0), facts(1)] if fs is None else fs
    fe = copy.deepcopy(fs) if fe is None else fe
    return verdict(samples, fs, fe, xids or [], list(windows))


def check(v, cid):
    return next(c for c in v["checks"] if c["id"] == cid)


def test_clean_run_at_power_cap_passes():
    v = run()
    assert v["status"] == "PASS", v["reasons"]
    assert v["reasons"] == ["No GPU health problems found."]
    hw = check(v, "hw_throttle")
    assert hw["status"] == "PASS" and "power cap" in hw["detail"] and "normal under heavy load" in hw["detail"]
    for c in v["checks"]:
        assert c["status"] in ("PASS", "WARN", "FAIL", "SKIP") and c["title"] and c["detail"].endswith((".", ")"))


def test_hw_thermal_slowdown_under_load_fails():
    def thr(t):
        if 20 <= t < 24:
            return 0x4 | 0x40
        return 0x4 if 10 <= t <= 50 else 0x1
    v = run(samples=series(0) + series(1, throttle=thr))
    assert v["status"] == "FAIL"
    c = check(v, "hw_throttle")
    assert c["status"] == "FAIL" and c["gpus"] == [1]
    assert "GPU 1: hw thermal slowdown for 10% of the load time" in c["detail"]
    assert v["reasons"][0].startswith("Hardware slowdown under load")


def test_brief_hw_slowdown_only_warns_and_idle_time_is_ignored():
    def thr(t):
        if t == 30:
            return 0x4 | 0x8        # one sample (0.25 s of 40 s) of HW slowdown under load
        if t == 5:
            return 0x1 | 0x80       # power brake while idle: outside the load window, not counted
        return 0x4 if 10 <= t <= 50 else 0x1
    v = run(samples=series(0, throttle=thr) + series(1))
    c = check(v, "hw_throttle")
    assert c["status"] == "WARN" and "hw slowdown" in c["detail"] and "power brake" not in c["detail"]
    assert v["status"] == "WARN"


def test_sw_thermal_and_thermal_violation_counter_warn():
    def thr(t):
        return (0x4 | 0x20) if 30 <= t < 35 else (0x4 if 10 <= t <= 50 else 0x1)
    fe = [facts(0), facts(1, violation_thermal={"violation_ns": 3 * S, "reference_us": 0})]
    v = run(samples=series(0, throttle=thr) + series(1), fe=fe)
    c = check(v, "thermal")
    assert c["status"] == "WARN" and c["gpus"] == [0, 1]
    assert "software thermal slowdown for 12%" in c["detail"] and "thermal policy for 3.0 s" in c["detail"]


@pytest.mark.parametrize("xid,status", [(79, "FAIL"), (48, "FAIL"), (43, "WARN"), (13, "WARN")])
def test_xid_errors(xid, status):
    v = run(xids=[(1, xid, T0 + 30 * S)])
    c = check(v, "xid")
    assert c["status"] == status and v["status"] == status and f"XID {xid}" in c["detail"]
    # dict form (as stored in Event payloads) is accepted too
    assert check(run(xids=[{"gpu": 1, "xid": xid, "t_ns": T0}]), "xid")["status"] == status


def test_new_ecc_errors():
    v = run(fe=[facts(0), facts(1, ecc_volatile_uncorrected=2, ecc_aggregate_uncorrected=2)])
    assert check(v, "ecc")["status"] == "FAIL" and "GPU 1: +2" in check(v, "ecc")["detail"]
    v = run(fe=[facts(0, ecc_volatile_corrected=5, ecc_aggregate_corrected=8), facts(1)])
    assert check(v, "ecc")["status"] == "WARN" and v["status"] == "WARN"


def test_memory_repair():
    v = run(fe=[facts(0, remapped_rows_pending=True, remapped_rows_uncorrectable=1), facts(1)])
    c = check(v, "memory_repair")
    assert c["status"] == "WARN" and "pending until the GPU is reset" in c["detail"] and "+1 rows remapped" in c["detail"]
    v = run(fe=[facts(0), facts(1, remapped_rows_failure=True)])
    assert check(v, "memory_repair")["status"] == "FAIL" and v["status"] == "FAIL"


def test_clocks_far_below_max_under_load():
    # No power cap to explain low clocks: warn.
    v = run(samples=series(0, clock_load=900.0, throttle=lambda t: 0x0 if 10 <= t <= 50 else 0x1) + series(1))
    c = check(v, "clocks")
    assert c["status"] == "WARN" and "900 MHz, 45% of its 1980 MHz" in c["detail"] and c["gpus"] == [0]
    # The same clocks while at the power cap (what an H100 does under a matmul loop: ~1370 MHz): normal.
    v = run(samples=series(0, clock_load=1370.0) + series(1))
    c = check(v, "clocks")
    assert c["status"] == "PASS" and "GPU 0 at its power cap, median SM clock 1370 MHz (69% of max)" in c["detail"]


def test_temperatures_near_and_over_limits():
    v = run(samples=series(0, temp_load=84.0) + series(1))
    assert check(v, "temperature")["status"] == "WARN"
    assert "within 5 °C of its 87 °C limit" in check(v, "temperature")["detail"]
    v = run(samples=series(0) + series(1, hbm_load=96.0))
    c = check(v, "temperature")
    assert c["status"] == "FAIL" and "memory (HBM) reached 96 °C" in c["detail"] and c["gpus"] == [1]


def test_power_limit_lowered_and_pcie():
    v = run(fs=[facts(0, power_limit_w=500.0), facts(1)])
    assert check(v, "power_limit")["status"] == "WARN" and "500 W, below its default 700 W" in check(v, "power_limit")["detail"]
    v = run(fe=[facts(0, pcie_link_width=8), facts(1, pcie_replay_counter=12)])
    c = check(v, "pcie")
    assert c["status"] == "WARN" and "x8 of x16" in c["detail"] and "12 PCIe replays" in c["detail"]


def test_gpu_idle_while_load_applied():
    v = run(samples=series(0) + series(1, util_load=0.0))
    c = check(v, "idle_under_load")
    assert c["status"] == "WARN" and c["gpus"] == [1]


def test_no_telemetry_and_no_facts():
    v = verdict([], None, None, [], [LOAD])
    assert v["status"] == "WARN" and v["reasons"][0].startswith("No GPU telemetry")
    assert check(v, "ecc")["status"] == "SKIP" and check(v, "hw_throttle")["status"] == "SKIP"


def test_simulated_is_labelled_and_facts_shapes():
    sim = [dict(r, simulated=True) for r in series(0)]
    v = verdict(sim, {"0": facts(0)}, {0: facts(0)}, [], [LOAD])
    assert v["simulated"] is True and v["status"] == "PASS"
    assert v["reasons"][0].startswith("SIMULATED telemetry")
    assert check(v, "ecc")["status"] == "PASS"  # dict keyed by index (str or int) is accepted
    v = verdict(series(0), facts(0), facts(0, ecc_volatile_uncorrected=1), [], [LOAD])  # a single facts dict
    assert check(v, "ecc")["status"] == "FAIL"
