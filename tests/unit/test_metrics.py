"""bench.metrics.summarize against hand-computed numbers (every expected value is worked out below)."""
from __future__ import annotations

import math

import pytest

from bench.config import SLO
from bench.hist import LogHistogram
from bench.loadgen import LevelOutcome, RequestResult
from bench.metrics import is_good, stats, summarize, tpot_ms


def req(seq, ttft, e2e, out, *, inp=100, ok=True, warmup=False, error=None, queue=0.5, max_tokens=None):
    return RequestResult(seq=seq, warmup=warmup, send_ns=1_000 + seq, queue_ms=queue, ttft_ms=ttft, e2e_ms=e2e,
                         input_tokens=inp if ok else None, output_tokens=out if ok else None, chunks=out or 0,
                         itl_mean_ms=None, itl_max_ms=None, ok=ok, status_code=200 if ok else 500,
                         error=error, max_tokens=max_tokens)


def outcome(results, duration_s=2.0, itl_gaps_ns=(), **kw):
    h = LogHistogram()
    h.add_many(list(itl_gaps_ns))
    measured = [r for r in results if not r.warmup]
    ok = sum(r.ok for r in measured)
    base = dict(results_ok=ok, results_err=len(measured) - ok, n_sent=len(measured), start_ns=0,
                end_ns=int(duration_s * 1e9), duration_s=duration_s, itl=h, client_cpu_pct=42.0,
                client_bound=False, cancelled=False, concurrency=4)
    base.update(kw)
    return LevelOutcome(**base)


# r1: TPOT (50-10)/(5-1)=10; r2: 1 token -> no TPOT (counts 0 for goodput); r3: (130-30)/10=10;
# r4: (240-40)/10=20. Plus one failed request and one warm-up request with absurd numbers.
RESULTS = [
    req(0, 9999.0, 99999.0, 1000, warmup=True, inp=7777),
    req(1, 10.0, 50.0, 5, queue=1.0),
    req(2, 20.0, 20.0, 1, queue=2.0),
    req(3, 30.0, 130.0, 11, queue=3.0),
    req(4, 40.0, 240.0, 11, queue=4.0),
    req(5, None, None, None, ok=False, error="HTTP 500: boom", queue=5.0),
]


def test_counts_and_throughput():
    s = summarize(RESULTS, outcome(RESULTS), SLO())
    assert (s["n_sent"], s["n_ok"], s["n_err"], s["n_warmup"]) == (5, 4, 1, 1)
    assert s["accounted"] is True
    assert s["output_tokens"] == 5 + 1 + 11 + 11 == 28
    assert s["input_tokens"] == 400              # OK requests only, warm-up excluded
    assert s["output_tok_s"] == pytest.approx(28 / 2.0)
    assert s["total_tok_s"] == pytest.approx(428 / 2.0)
    assert s["req_s"] == pytest.approx(4 / 2.0)  # completed (OK) requests per second
    # No SLO set: every OK request is good (and the summary says no SLO was set).
    assert s["goodput_req_s"] == s["req_s"] and s["n_good"] == 4 and s["goodput_slo_set"] is False
    assert s["errors"] == {"HTTP 500: boom": 1}
    assert s["concurrency"] == 4 and s["client_cpu_pct"] == 42.0 and s["client_bound"] is False


def test_latency_stats_by_hand():
    s = summarize(RESULTS, outcome(RESULTS), SLO())
    t = s["ttft_ms"]  # [10, 20, 30, 40]
    assert t["n"] == 4 and t["mean"] == pytest.approx(25.0) and t["p50"] == pytest.approx(25.0)
    assert t["p90"] == pytest.approx(37.0)   # rank 0.9*3 = 2.7 -> 30 + 0.7*10
    assert t["p99"] == pytest.approx(39.7)   # rank 2.97 -> 30 + 0.97*10
    assert t["std"] == pytest.approx(math.sqrt((15**2 + 5**2 + 5**2 + 15**2) / 4))
    assert (t["min"], t["max"]) == (10.0, 40.0)
    p = s["tpot_ms"]  # [10, 10, 20]; the 1-token request has none
    assert p["n"] == 3 and p["mean"] == pytest.approx(40 / 3) and p["p50"] == pytest.approx(10.0)
    assert p["p90"] == pytest.approx(18.0)   # rank 1.8 -> 10 + 0.8*10
    e = s["e2e_ms"]  # sorted [20, 50, 130, 240]
    assert e["mean"] == pytest.approx(110.0) and e["p50"] == pytest.approx(90.0)
    assert e["p99"] == pytest.approx(130 + 0.97 * 110)
    q = s["queue_ms"]  # all measured requests, the failed one included: [1, 2, 3, 4, 5]
    assert q["n"] == 5 and q["mean"] == pytest.approx(3.0) and q["max"] == 5.0


def test_goodput_every_set_slo_inclusive():
    # ttft <= 30 and tpot <= 15: r1 (10, 10) good, r2 (20, tpot 0) good, r3 (30, 10) good (limit
    # inclusive), r4 (40) bad -> 3 good in 2 s.
    s = summarize(RESULTS, outcome(RESULTS), SLO(ttft_ms=30, tpot_ms=15))
    assert s["n_good"] == 3 and s["goodput_req_s"] == pytest.approx(1.5) and s["goodput_slo_set"] is True
    # Adding e2e <= 60 leaves r1 (50) and r2 (20).
    s = summarize(RESULTS, outcome(RESULTS), SLO(ttft_ms=30, tpot_ms=15, e2e_ms=60))
    assert s["n_good"] == 2 and s["goodput_req_s"] == pytest.approx(1.0)
    # TPOT alone: r4 (20) fails a 19.9 limit, the rest pass; the failed request never counts.
    s = summarize(RESULTS, outcome(RESULTS), SLO(tpot_ms=19.9))
    assert s["n_good"] == 3


def test_itl_comes_from_the_pooled_histogram():
    gaps = [1_000_000, 2_000_000, 3_000_000, 4_000_000]  # 1..4 ms
    s = summarize(RESULTS, outcome(RESULTS, itl_gaps_ns=gaps), SLO())
    itl = s["itl_ms"]
    assert itl["n"] == 4 and itl["mean"] == pytest.approx(2.5)       # exact
    assert itl["min"] == 1.0 and itl["max"] == 4.0                     # exact
    assert itl["p50"] == pytest.approx(2.5, rel=0.01)                  # approximate, <= 1%
    assert itl["std"] == pytest.approx(math.sqrt(1.25))
    assert LogHistogram.from_dict(s["itl_hist"]).count == 4


def test_short_output_is_flagged():
    rs = [req(0, 1.0, 5.0, 5, max_tokens=5), req(1, 1.0, 3.0, 3, max_tokens=5)]
    assert summarize(rs, outcome(rs), SLO())["n_short_output"] == 1


def test_empty_and_all_failed_levels():
    rs = [req(0, None, None, None, ok=False, error="cancelled")]
    s = summarize(rs, outcome(rs, duration_s=0.0, cancelled=True), SLO(ttft_ms=1))
    assert (s["n_sent"], s["n_ok"], s["n_err"]) == (1, 0, 1)
    assert s["output_tok_s"] is None and s["req_s"] is None   # zero duration: no rate rather than inf
    assert s["ttft_ms"]["mean"] is None and s["itl_ms"]["p50"] is None
    assert s["cancelled"] is True and s["errors"] == {"cancelled": 1}
    s = summarize(rs, outcome(rs, duration_s=1.0), SLO(ttft_ms=1))
    assert s["req_s"] == 0 and s["goodput_req_s"] == 0


def test_helpers():
    assert tpot_ms(req(0, 10.0, 10.0, 1)) is None
    assert tpot_ms(req(0, 10.0, 30.0, 3)) == pytest.approx(10.0)
    assert is_good(req(0, 10.0, 10.0, 1), SLO(tpot_ms=0.001))  # 1-token requests have TPOT 0
    assert stats([])["mean"] is None and stats([3.0])["p99"] == 3.0


def test_accounting_mismatch_is_visible():
    s = summarize(RESULTS[:3], outcome(RESULTS), SLO())  # a caller lost results on the way
    assert s["accounted"] is False
