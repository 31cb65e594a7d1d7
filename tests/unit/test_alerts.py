"""Alert thresholds (bench/alerts.py) and the live monitor's rolling values (bench/live_monitor.py)."""
import time
from types import SimpleNamespace

import pytest

from bench.alerts import AlertThresholds, Threshold, evaluate, level_values, load_thresholds, summary_line
from bench.live_monitor import LiveMonitor


def rules(alerts):
    return {(a["rule"], a["severity"]) for a in alerts}


def test_defaults_from_the_deployment_report():
    th = AlertThresholds()
    assert (th.ttft_p99_ms.warning, th.ttft_p99_ms.critical) == (100, 200)
    assert (th.e2e_p99_ms.warning, th.e2e_p99_ms.critical) == (10_000, 15_000)
    assert (th.queue_depth.warning, th.queue_depth.critical) == (50, 100)
    assert (th.error_rate_pct.warning, th.error_rate_pct.critical) == (1, 5)
    assert th.gpu_util_low_pct.warning == 70 and th.gpu_util_low_pct.direction == "below"
    assert th.gpu_util_high_pct.warning == 95 and th.gpu_mem_pct.warning == 90
    assert th.output_tok_s.warning is None  # no floor until one is set


def test_evaluate_each_rule_and_severity():
    th = AlertThresholds()
    assert evaluate({"ttft_p99_ms": 100.0, "e2e_p99_ms": 10_000, "queue_depth": 50, "error_rate_pct": 1.0,
                     "gpu_util_min_pct": 70, "gpu_util_max_pct": 95, "gpu_mem_pct": 90}, th) == []  # limits inclusive
    got = evaluate({"ttft_p99_ms": 150, "e2e_p99_ms": 16_000, "queue_depth": 101, "error_rate_pct": 2,
                    "gpu_util_min_pct": 40, "gpu_util_max_pct": 99, "gpu_mem_pct": 93}, th)
    assert rules(got) == {("ttft_p99_ms", "warning"), ("e2e_p99_ms", "critical"), ("queue_depth", "critical"),
                          ("error_rate_pct", "warning"), ("gpu_util_low_pct", "warning"),
                          ("gpu_util_high_pct", "warning"), ("gpu_mem_pct", "warning")}
    assert got[0]["severity"] == "critical"  # worst first
    assert "TTFT p99 150 ms > 100 ms" in summary_line(got)
    assert evaluate({}, th) == []  # nothing measured, nothing raised


def test_floor_and_overrides():
    th = AlertThresholds().with_override("output_tok_s=1000,500").with_override("ttft_p99_ms=off,300")
    assert rules(evaluate({"output_tok_s": 800}, th)) == {("output_tok_s", "warning")}
    assert rules(evaluate({"output_tok_s": 400}, th)) == {("output_tok_s", "critical")}
    assert rules(evaluate({"ttft_p99_ms": 250}, th)) == set()
    assert rules(evaluate({"ttft_p99_ms": 301}, th)) == {("ttft_p99_ms", "critical")}
    with pytest.raises(ValueError):
        AlertThresholds().with_override("nope=1,2")
    with pytest.raises(ValueError):
        AlertThresholds().with_override("ttft_p99_ms=300,100")  # critical below warning
    with pytest.raises(ValueError):
        Threshold(warning=500, critical=1000, direction="below")


def test_yaml_file(tmp_path):
    f = tmp_path / "alerts.yaml"
    f.write_text("ttft_p99_ms: {warning: 300, critical: 600}\noutput_tok_s: {warning: 50}\n")
    th = load_thresholds(f)
    assert (th.ttft_p99_ms.warning, th.ttft_p99_ms.critical) == (300, 600)
    assert th.output_tok_s.warning == 50 and th.output_tok_s.direction == "below"
    assert th.queue_depth.warning == 50  # untouched rules keep the defaults
    f.write_text("ttft_p99: {warning: 3}\n")
    with pytest.raises(ValueError, match="unknown alert rule"):
        load_thresholds(f)
    f.write_text("ttft_p99_ms: {warning: 3, bogus: 1}\n")
    with pytest.raises(ValueError):
        load_thresholds(f)


def test_level_values_from_summary_telemetry_engine_rows():
    summary = {"n_sent": 200, "n_err": 4, "ttft_ms": {"p99": 120.0}, "e2e_ms": {"p99": 900.0}, "output_tok_s": 5000}
    tele = [{"t_ns": 1, "gpu_index": 0, "util_gpu": 90, "mem_used_mb": 70_000, "mem_total_mb": 80_000},
            {"t_ns": 2, "gpu_index": 0, "util_gpu": 100, "mem_used_mb": 76_000, "mem_total_mb": 80_000},
            {"t_ns": 1, "gpu_index": 1, "util_gpu": 30, "mem_used_mb": 10_000, "mem_total_mb": 80_000}]
    v = level_values(summary, tele, [{"waiting": 3}, {"waiting": 60}])
    assert v["error_rate_pct"] == 2.0 and v["queue_depth"] == 60
    assert v["gpu_util_min_pct"] == 30 and v["gpu_util_max_pct"] == 95 and v["gpu_mem_pct"] == 95
    assert rules(evaluate(v, AlertThresholds())) == {
        ("ttft_p99_ms", "warning"), ("error_rate_pct", "warning"), ("queue_depth", "warning"),
        ("gpu_util_low_pct", "warning"), ("gpu_mem_pct", "warning")}


def _res(send_ns, ok=True, ttft=50.0, e2e=500.0, out=100):
    return SimpleNamespace(warmup=False, send_ns=send_ns, ok=ok, ttft_ms=ttft if ok else None,
                           e2e_ms=e2e if ok else None, output_tokens=out if ok else None)


def test_live_monitor_rolling_window_and_change_events():
    changes = []
    mon = LiveMonitor(AlertThresholds(), on_change=lambda a, v: changes.append(rules(a)), window_s=10)
    mon.start_level(0, 8, None)
    now = time.time_ns()
    old = [_res(now - int(60e9), ttft=5000.0)]            # ended a minute ago: outside the window
    fresh = [_res(now - int(2e9), ttft=t) for t in (40.0, 60.0, 250.0)] + [_res(now - int(1e9), ok=False)]
    mon.feed_results(old + fresh)
    v = mon.current_values(now)
    assert 200 < v["ttft_p99_ms"] < 250 and v["error_rate_pct"] == 25.0
    mon.tick()
    assert changes == [{("ttft_p99_ms", "critical"), ("error_rate_pct", "critical")}]
    mon.tick()
    assert len(changes) == 1  # same alerts: no new event
    snap = mon.snapshot()
    assert snap["level"]["sent"] == 5 and snap["level"]["err"] == 1
    mon.end_level({"concurrency": 8, "n_ok": 4, "n_err": 1}, "completed")
    assert mon.snapshot()["finished"][0]["status"] == "completed"
    mon.stop()
    assert changes[-1] == set()  # the run is over: the alerts are cleared


def test_live_gpu_values_only_after_the_levels_load_began():
    mon = LiveMonitor(AlertThresholds(), window_s=10, gpu_window_s=60)
    mon.start_level(0, 4, None)
    now = time.time_ns()
    mon.feed_telemetry([{"t_ns": now - int(8e9), "gpu_index": 0, "util_gpu": 0.0},    # prompts being made: idle
                        {"t_ns": now - int(2e9), "gpu_index": 0, "util_gpu": 90.0}])
    assert mon.current_values(now)["gpu_util_min_pct"] is None   # no request finished yet: load start unknown
    mon.feed_results([_res(now - int(5e9))])
    assert mon.current_values(now)["gpu_util_min_pct"] == 90.0


def test_live_monitor_keeps_only_the_window_of_a_long_level():
    # A 10-minute soak level: the monitor used to keep every result of the level and scan them all once a second.
    mon = LiveMonitor(AlertThresholds(), window_s=10)
    mon.start_level(0, 10_000, None)
    now = time.time_ns()
    for s in range(600, 0, -1):   # one batch per second: 100 results that ended s seconds ago
        mon.feed_results([_res(now - int(s * 1e9) - i, ttft=float(s)) for i in range(100)])
        mon.current_values(now - int(s * 1e9))
    assert len(mon._results) <= 11 * 100
    v = mon.current_values(now)
    assert len(mon._results) == 10 * 100                       # the last 10 s, nothing older
    assert v["ttft_p99_ms"] <= 10.0 and v["error_rate_pct"] == 0.0
    assert mon.snapshot()["level"]["sent"] == 60_000           # the level's counts still cover all of it
