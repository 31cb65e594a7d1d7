"""Prometheus text rendering of a run (bench/prom_export.py) checked by prometheus_client's own parser, and the DCGM
exporter page -> telemetry rows mapping (telemetry/dcgm.py) on the fixture page."""
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from telemetry.dcgm import rows_from_text
from telemetry.nvml import SAMPLE_KEYS
from bench.prom_export import render

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "dcgm_exporter_h100x2.prom"


def samples(text):
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_render_parses_and_carries_the_numbers():
    snap = {"info": {"run_id": 7, "engine": "sim", "model": 'we"ird\nname', "gpu": "H100", "simulated": True},
            "level": {"index": 1, "concurrency": 32, "request_rate": None, "sent": 10, "ok": 9, "err": 1},
            "values": {"ttft_p99_ms": 250.0, "output_tok_s": 1234.5, "gpu_util_min_pct": 55.0, "queue_depth": 3},
            "alerts": [{"rule": "ttft_p99_ms", "severity": "critical"}],
            "finished": [{"index": 0, "concurrency": 4, "n_ok": 40, "n_err": 0, "output_tok_s": 800.0, "req_s": 6.0,
                          "goodput_req_s": 5.5, "ttft_ms": {"p50": 20.0, "p90": 30.0, "p95": 35.0, "p99": 40.0},
                          "tpot_ms": {"p50": 5.0, "p99": 6.0}, "e2e_ms": {}, "alerts": [{"severity": "warning"}]}],
            "search": {"mode": "concurrency", "best": 4}}
    got = samples(render(snap))
    (labels, v), = got["melt_run_info"]
    assert v == 1 and labels["model"] == 'we"ird\nname' and labels["simulated"] == "true"
    reqs = {(s[0]["level"], s[0]["outcome"]): s[1] for s in got["melt_level_requests_total"]}
    assert reqs[("1", "error")] == 1 and reqs[("0", "ok")] == 40
    assert got["melt_level_output_tokens_per_second"] == [({"level": "0", "concurrency": "4"}, 800.0)]
    q = {s[0]["quantile"]: s[1] for s in got["melt_level_ttft_seconds"]}
    assert q == {"0.5": 0.02, "0.9": 0.03, "0.95": 0.035, "0.99": 0.04}
    assert got["melt_live_ttft_p99_seconds"][0][1] == 0.25
    assert got["melt_live_gpu_util_min_ratio"][0][1] == 0.55
    assert got["melt_alert"] == [({"rule": "ttft_p99_ms", "severity": "critical"}, 1.0)]
    assert ({"level": "0", "severity": "warning"}, 1.0) in got["melt_level_alerts"]
    assert got["melt_slo_search_best"][0][1] == 4
    assert "melt_live_e2e_p99_seconds" not in got  # no value: no sample (never a made-up 0)


def test_render_of_an_empty_snapshot_is_valid():
    got = samples(render({"info": {}, "level": None, "values": {}, "alerts": [], "finished": []}))
    assert list(got) == ["melt_run_info"]


def test_dcgm_page_maps_to_nvml_sample_keys():
    rows = rows_from_text(FIXTURE.read_text())
    assert [r["gpu_index"] for r in rows] == [0, 1]
    for r in rows:
        assert set(r) == set(SAMPLE_KEYS)
    g0, g1 = rows
    assert g0["gpu_uuid"] == "GPU-3f2c9a1e-7b44-4c1d-9e8f-0a1b2c3d4e5f"
    assert g0["util_gpu"] == 97 and g0["util_mem"] == 61
    assert g0["mem_used_mb"] == 72000 and g0["mem_total_mb"] == 81559 == g1["mem_total_mb"]  # used+free+reserved
    assert g0["power_avg_w"] == g0["power_w"] == 512.337
    assert abs(g0["energy_j"] - 8812345.678) < 1e-6                                      # mJ -> J
    assert (g0["temp_gpu_c"], g0["temp_mem_c"], g0["sm_clock_mhz"], g0["mem_clock_mhz"]) == (58, 51, 1980, 2619)
    assert abs(g0["sm_active"] - 90.125) < 1e-9 and abs(g0["tensor_active"] - 28.4512) < 1e-9  # ratio -> %
    assert abs(g0["pcie_rx_kbs"] - 38225.174) < 1e-9                                       # B/s -> kB/s
    assert g1["throttle_reasons"] == 4 and isinstance(g1["throttle_reasons"], int) and g1["pstate"] == 0
    assert g0["extra"]["model"] == "NVIDIA H100 80GB HBM3" and g0["extra"]["source"] == "dcgm"


def test_dcgm_newer_names_and_instant_power():
    page = ('DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-a"} 300\n'
            'DCGM_FI_DEV_POWER_USAGE_INSTANT{gpu="0",UUID="GPU-a"} 355.5\n'
            'DCGM_FI_DEV_CLOCKS_EVENT_REASONS{gpu="0",UUID="GPU-a"} 1\n')
    (r,) = rows_from_text(page)
    assert r["power_avg_w"] == 300 and r["power_w"] == 355.5 and r["throttle_reasons"] == 1
    assert rows_from_text("# nothing here\nnode_load1 0.5\n") == []


def _ecc_page(dbe1: int, sbe0: int = 3, remap_pending: int = 0) -> str:
    lab = 'gpu="{g}",UUID="GPU-{g}",device="nvidia{g}",modelName="NVIDIA H100 80GB HBM3",Hostname="h"'
    lines = []
    for name, vals in (("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", (sbe0, 0)), ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", (0, dbe1)),
                       ("DCGM_FI_DEV_ROW_REMAP_PENDING", (0, remap_pending)),
                       ("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", (0, 1))):
        lines.append(f"# TYPE {name} counter" if "TOTAL" in name else f"# TYPE {name} gauge")
        lines += [f"{name}{{{lab.format(g=g)}}} {v}" for g, v in enumerate(vals)]
    return "\n".join(lines) + "\n"


def test_dcgm_ecc_and_remap_counters_feed_the_health_verdict():
    from telemetry.dcgm import facts_from_text
    from telemetry.health import verdict

    start, end = facts_from_text(_ecc_page(0)), facts_from_text(_ecc_page(2, remap_pending=1))
    assert start["1"] == {"available": True, "index": 1, "uuid": "GPU-1", "source": "dcgm",
                          "ecc_volatile_corrected": 0, "ecc_volatile_uncorrected": 0, "remapped_rows_pending": False,
                          "remapped_rows_uncorrectable": 1}
    rows = rows_from_text(FIXTURE.read_text())
    checks = {c["id"]: c for c in verdict(rows, start, end, [], [])["checks"]}
    assert checks["ecc"]["status"] == "FAIL" and "GPU 1: +2" in checks["ecc"]["detail"]
    assert checks["memory_repair"]["status"] == "WARN" and "GPU 1: a row remapping is pending" in \
        checks["memory_repair"]["detail"]
    same = {c["id"]: c for c in verdict(rows, start, facts_from_text(_ecc_page(0)), [], [])["checks"]}
    assert same["ecc"]["status"] == "PASS"
    # the fixture page (dcgm-exporter's default counters): remapped rows, no ECC totals -> ECC SKIP, never PASS
    f = facts_from_text(FIXTURE.read_text())
    assert sorted(f) == ["0", "1"] and f["0"]["remapped_rows_uncorrectable"] == 0 and "ecc_volatile_corrected" not in f["0"]
    checks = {c["id"]: c for c in verdict(rows, f, f, [], [])["checks"]}
    assert checks["ecc"]["status"] == "SKIP" and checks["memory_repair"]["status"] == "PASS"


def test_dcgm_facts_skip_values_that_are_not_counters():
    from telemetry.dcgm import facts_from_text

    lab = 'gpu="{g}",UUID="GPU-{u}"'
    page = "\n".join([
        f'DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{{{lab.format(g=0, u="a")}}} NaN',
        f'DCGM_FI_DEV_ECC_SBE_VOL_TOTAL{{{lab.format(g=0, u="a")}}} +Inf',
        f'DCGM_FI_DEV_ROW_REMAP_PENDING{{{lab.format(g=0, u="a")}}} NaN',
        f'DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{{{lab.format(g=-3, u="b")}}} 1',
        f'DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{{{lab.format(g=1, u="c")}}} 2',
        f'DCGM_FI_DEV_ECC_SBE_VOL_TOTAL{{{lab.format(g=1, u="d")}}} 5',
    ]) + "\n"
    f = facts_from_text(page)
    assert "0" not in f and "-3" not in f                       # NaN / Inf / a negative index say nothing
    assert f["1"]["available"] is False and "two UUIDs" in f["1"]["reason"]
