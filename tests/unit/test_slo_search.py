"""The SLO search's bisection (bench/slo_search.py): monotone, noisy, never-meets, always-meets, the max bound, rate
mode, the MLPerf presets and the level check on real summary shapes."""
import math
import random

import pytest

from bench.slo_search import Limit, SloSearch, SloSearchSpec, level_budget, level_meets, mlperf_preset

LIM = [Limit(metric="ttft", percentile=99, max_ms=100)]


def drive(spec: SloSearchSpec, meets) -> tuple[dict, list[float]]:
    s = SloSearch(spec)
    seen = []
    while (v := s.next_value()) is not None:
        assert v not in seen, f"probe {v} repeated"
        seen.append(v)
        s.record(v, bool(meets(v)))
        assert len(seen) <= spec.max_levels
    return s.result(), seen


@pytest.mark.parametrize("knee", [1, 2, 3, 7, 37, 100, 511, 1000])
def test_monotone_finds_exact_knee_within_budget(knee):
    spec = SloSearchSpec(limits=LIM, max_value=1024, max_levels=30)
    res, seen = drive(spec, lambda c: c <= knee)
    assert res["best"] == knee
    assert res["lowest_failing"] == knee + 1
    assert len(seen) <= level_budget(spec) <= 2 * math.ceil(math.log2(1024)) + 1
    assert "bracketed" in res["reason"]


def test_exponential_then_binary_order():
    res, seen = drive(SloSearchSpec(limits=LIM, max_value=1024), lambda c: c <= 40)
    assert seen[:7] == [1, 2, 4, 8, 16, 32, 64]  # up by x2 until the first failure
    assert all(32 < v < 64 for v in seen[7:])      # then only inside the bracket
    assert res["best"] == 40


def test_always_meets_stops_at_max_bound():
    res, seen = drive(SloSearchSpec(limits=LIM, max_value=300), lambda c: True)
    assert seen == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert res["best"] == 300 and res["lowest_failing"] is None
    assert "upper bound" in res["reason"]


def test_never_meets():
    res, seen = drive(SloSearchSpec(limits=LIM), lambda c: False)
    assert seen == [1]
    assert res["best"] is None and "no level meets" in res["reason"]


def test_start_above_knee_bisects_down():
    res, seen = drive(SloSearchSpec(limits=LIM, start=64, max_value=1024), lambda c: c <= 5)
    assert seen[0] == 64 and res["best"] == 5 and res["lowest_failing"] == 6
    res, seen = drive(SloSearchSpec(limits=LIM, start=64, min_value=4, max_value=1024), lambda c: c <= 3)
    assert res["best"] is None and 4 in seen


def test_non_monotone_noise_ends_on_a_measured_boundary():
    rng = random.Random(7)
    for trial in range(200):
        knee = rng.randint(2, 900)
        flips = {rng.randint(1, 1024) for _ in range(5)}  # noisy levels answer the opposite
        outcome = {}

        def meets(c):
            outcome[c] = (c <= knee) != (c in flips)
            return outcome[c]

        spec = SloSearchSpec(limits=LIM, max_value=1024, max_levels=25)
        res, seen = drive(spec, meets)
        if res["best"] is not None:
            assert outcome[res["best"]], "the answer is a level that was measured to meet the limits"
            if res["lowest_failing"] is not None:
                assert not outcome[res["lowest_failing"]]
                assert res["lowest_failing"] - res["best"] == 1
                assert all(not (res["best"] < v < res["lowest_failing"]) for v in seen)
        assert len(seen) <= spec.max_levels


def test_max_levels_caps_the_search():
    res, seen = drive(SloSearchSpec(limits=LIM, max_value=1024, max_levels=5), lambda c: c <= 700)
    assert len(seen) == 5 and res["best"] == 16 and "max_levels" in res["reason"]


def test_tolerance_stops_early():
    res, seen = drive(SloSearchSpec(limits=LIM, max_value=1024, tolerance=0.1, max_levels=30), lambda c: c <= 300)
    assert res["best"] <= 300 < res["lowest_failing"]
    assert res["lowest_failing"] - res["best"] <= 0.1 * res["best"]
    full, seen_full = drive(SloSearchSpec(limits=LIM, max_value=1024, max_levels=30), lambda c: c <= 300)
    assert len(seen) < len(seen_full)


def test_rate_mode_floats():
    spec = SloSearchSpec(limits=LIM, mode="rate", start=0.5, min_value=0.1, max_value=64, tolerance=0.05)
    res, seen = drive(spec, lambda r: r <= 7.3)
    assert res["best"] <= 7.3 < res["lowest_failing"]
    assert res["lowest_failing"] - res["best"] <= 0.05 * res["best"]
    assert len(seen) <= level_budget(spec)


def test_spec_validation():
    with pytest.raises(ValueError):
        SloSearchSpec(limits=LIM, start=2000, max_value=1024)
    with pytest.raises(ValueError):
        SloSearchSpec(limits=[])
    with pytest.raises(ValueError):
        SloSearchSpec(limits=LIM * 2)


def test_mlperf_presets_by_size():
    lims, row = mlperf_preset("interactive", 0.6)
    assert row == "llama3_1-8b" and [(x.metric, x.percentile, x.max_ms) for x in lims] == [
        ("ttft", 99, 500.0), ("tpot", 99, 30.0)]
    lims, row = mlperf_preset("standard", 70)
    assert row == "llama2-70b" and [x.max_ms for x in lims] == [2000.0, 200.0]
    lims, row = mlperf_preset("interactive", 405)
    assert row == "llama3_1-405b" and [x.max_ms for x in lims] == [4500.0, 80.0]


def _summary(ttft_p99, tpot_p99, n_ok=10, n_err=0):
    return {"n_sent": n_ok + n_err, "n_ok": n_ok, "n_err": n_err,
            "ttft_ms": {"p50": ttft_p99 / 2, "p99": ttft_p99}, "tpot_ms": {"p99": tpot_p99}, "e2e_ms": {"p99": None}}


def test_level_meets():
    lims = [Limit(metric="ttft", max_ms=100), Limit(metric="tpot", max_ms=20)]
    assert level_meets(_summary(99, 20), lims)[0]
    ok, checks = level_meets(_summary(101, 10), lims)
    assert not ok and [c["ok"] for c in checks] == [True, False, True]
    assert not level_meets(_summary(50, 10, n_err=1), lims)[0]      # a failure fails the level
    assert level_meets(_summary(50, 10, n_err=1), lims, max_error_rate=0.1)[0]
    assert not level_meets(_summary(50, 10, n_ok=0), lims)[0]
    assert not level_meets(_summary(50, 10), [Limit(metric="e2e", max_ms=1)])[0]  # no value: not met


def test_cli_builds_the_search_and_refuses_what_it_cannot_do():
    from bench.cli import UsageError, build_config, make_parser

    sim = ["--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B"]
    cfg = build_config(make_parser().parse_args(["slo", *sim, "--preset", "interactive", "--max", "64"]))
    assert [(x.metric, x.max_ms) for x in cfg.slo_search.limits] == [("ttft", 500), ("tpot", 30)]
    assert cfg.workload.slo.ttft_ms == 500 and cfg.workload.slo.tpot_ms == 30  # goodput at the limits
    assert cfg.planned_levels()[0].concurrency == 1 and cfg.slo_search.max_value == 64
    cfg = build_config(make_parser().parse_args(["slo", *sim, "--e2e-ms", "9000", "--percentile", "90",
                                                 "--mode", "rate", "--start", "2"]))
    assert cfg.slo_search.limits[0].percentile == 90 and cfg.planned_levels()[0].request_rate == 2
    for bad in (["slo", *sim], ["slo", *sim, "--ttft-ms", "100", "--repeat", "2"],
                ["slo", *sim, "--ttft-ms", "100", "--start", "2000"]):
        with pytest.raises(UsageError):
            build_config(make_parser().parse_args(bad))
    cfg = build_config(make_parser().parse_args(["sweep", *sim, "--alert", "ttft_p99_ms=150,300",
                                                 "--metrics-port", "0", "--gpu-metrics-url", "http://h:9400"]))
    assert cfg.slo_search is None and cfg.alerts.ttft_p99_ms.critical == 300 and cfg.metrics_port == 0
    with pytest.raises(UsageError):
        build_config(make_parser().parse_args(["sweep", *sim, "--gpu-metrics-url", "ftp://x"]))
