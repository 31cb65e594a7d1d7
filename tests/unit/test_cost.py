"""bench.cost: the $ arithmetic, checked against numbers worked out by hand."""
import math

import pytest

from bench.cost import (LevelPerf, check_slo, cheapest_meeting_slo, daily_cost, gpus_needed, level_costs,
                        usd_per_million_tokens)


def test_usd_per_million_tokens_by_hand():
    # $3.60/h = $0.001/s; at 1,000 tok/s that is $1e-6 per token = $1 per 1M tokens.
    assert usd_per_million_tokens(1000, 1, 3.6) == pytest.approx(1.0)
    # Two GPUs cost twice as much for the same throughput.
    assert usd_per_million_tokens(1000, 2, 3.6) == pytest.approx(2.0)
    assert usd_per_million_tokens(0, 1, 3.6) is None
    assert usd_per_million_tokens(None, 1, 3.6) is None


def test_gpus_needed_rounds_up_to_whole_replicas():
    assert gpus_needed(2500, 1000, 2) == 6          # 2.5 replicas -> 3 replicas of 2 GPUs
    assert gpus_needed(2000, 1000, 1) == 2          # exact multiple: no extra replica
    assert gpus_needed(0, 1000, 1) == 0
    with pytest.raises(ValueError):
        gpus_needed(10, 0, 1)


def test_daily_cost_provisioned_and_prorated():
    # 43.2M tokens/day = 500 tok/s average; one 1,000 tok/s replica is half used.
    dc = daily_cost(43.2e6, 1000, 1, 2.0)
    assert dc.avg_tok_s == pytest.approx(500)
    assert (dc.replicas, dc.gpus) == (1, 1)
    assert dc.usd_provisioned == pytest.approx(48.0)   # 1 GPU x $2 x 24 h
    assert dc.usd_prorated == pytest.approx(24.0)      # 43,200 s of GPU time x $2/h
    assert dc.utilisation == pytest.approx(0.5)
    # A 3x peak needs 1,500 tok/s of capacity: two replicas.
    peak = daily_cost(43.2e6, 1000, 1, 2.0, peak_factor=3)
    assert (peak.replicas, peak.usd_provisioned) == (2, 96.0)
    assert peak.usd_prorated == pytest.approx(24.0)
    with pytest.raises(ValueError):
        daily_cost(1e6, 1000, 1, 2.0, peak_factor=0.5)


def _level(c, tok, ttft_p99, n_err=0, client_bound=False):
    return LevelPerf(concurrency=c, output_tok_s=tok, n_ok=100, n_err=n_err, client_bound=client_bound,
                     latency={"ttft_ms": {"p50": ttft_p99 / 2, "p99": ttft_p99}, "tpot_ms": {"p50": 10, "p99": 20}})


def test_check_slo_reasons():
    assert check_slo(_level(8, 1000, 300), {"ttft_ms": 500}) == []
    assert check_slo(_level(8, 1000, 800), {"ttft_ms": 500}) == ["ttft_ms p99 800 ms > 500 ms"]
    # The same level passes at p50 (400 ms).
    assert check_slo(_level(8, 1000, 800), {"ttft_ms": 500}, percentile="p50") == []
    assert "not measured" in check_slo(_level(8, 1000, 300), {"e2e_ms": 500})[0]
    assert any("failed" in r for r in check_slo(_level(8, 1000, 300, n_err=1), {}))
    assert check_slo(_level(8, 1000, 300, n_err=1), {}, max_error_rate=0.05) == []
    assert any("client-bound" in r for r in check_slo(_level(8, 1000, 300, client_bound=True), {}))
    assert check_slo(LevelPerf(concurrency=1, output_tok_s=None), {}) == ["no successful requests"]


def test_one_token_outputs_have_tpot_zero_not_unmeasured():
    # every request produced 1 token: no TPOT samples (n=0), which vLLM's goodput counts as TPOT 0
    one = LevelPerf(concurrency=4, output_tok_s=50, n_ok=10, latency={"tpot_ms": {"n": 0, "p99": None}})
    assert check_slo(one, {"tpot_ms": 5}) == []
    # but a level that recorded no TPOT summary at all is not measured
    assert "not measured" in check_slo(LevelPerf(concurrency=4, output_tok_s=50, n_ok=10), {"tpot_ms": 5})[0]


def test_cheapest_level_meeting_slo():
    levels = [_level(1, 100, 50), _level(8, 700, 200), _level(64, 3000, 900), _level(16, 1200, 400)]
    costs = level_costs(levels, gpu_count=1, price_per_gpu_hour=3.6, slo={"ttft_ms": 500})
    assert [c.concurrency for c in costs] == [1, 8, 16, 64]      # sorted by concurrency
    assert [c.meets_slo for c in costs] == [True, True, True, False]
    best = cheapest_meeting_slo(costs)
    assert best.concurrency == 16                                # C=64 is cheaper but misses the SLO
    assert best.usd_per_m_output == pytest.approx(1e6 / 1200 / 1000)
    assert cheapest_meeting_slo(level_costs(levels, 1, 3.6, {"ttft_ms": 10})) is None


def test_level_perf_from_summary():
    s = {"concurrency": 4, "output_tok_s": 512.0, "n_ok": 10, "n_err": 2, "client_bound": False,
         "ttft_ms": {"p50": 10.0, "p99": 30.0}, "e2e_ms": {"p99": 900.0}, "goodput_req_s": 1.5}
    lp = LevelPerf.from_summary(s)
    assert (lp.concurrency, lp.output_tok_s, lp.n_err) == (4, 512.0, 2)
    assert lp.latency["e2e_ms"]["p99"] == 900.0
    assert LevelPerf.from_summary(s, output_tok_s=600.0).output_tok_s == 600.0
    assert not math.isnan(lp.goodput_req_s)


def test_latency_break_is_the_first_level_that_misses_after_one_met():
    from bench.cost import LevelCost, latency_break

    def lc(c, ok):
        return LevelCost(c, 100.0, 1.0, ok, [] if ok else ["ttft_ms p99 900 ms > 450 ms"])

    assert latency_break([lc(64, False), lc(1, True), lc(16, True), lc(256, False)]).concurrency == 64
    assert latency_break([lc(1, True), lc(16, True)]) is None       # never breaks
    assert latency_break([lc(1, False), lc(16, False)]) is None     # never held

