"""Mean ± 95% confidence interval across repeated levels (bench/repeats.py)."""
import math
import statistics

import pytest

from bench.repeats import aggregate, format_ci, has_repeats, interval_rows, mean_ci, t95


def test_t_table_spot_values_and_limits():
    # published two-sided 95% critical values
    assert t95(1) == 12.706 and t95(2) == 4.303 and t95(4) == 2.776 and t95(9) == 2.262 and t95(30) == 2.042
    assert t95(35) == 2.042 and t95(45) == 2.021 and t95(200) == 1.980 and t95(10_000) == 1.960
    assert all(t95(d) >= t95(d + 1) for d in range(1, 2000))  # never narrower with fewer values
    with pytest.raises(ValueError):
        t95(0)


def test_mean_ci_student_t():
    ci = mean_ci([10.0, 12.0, 14.0])
    assert ci["n"] == 3 and ci["mean"] == 12.0 and ci["std"] == pytest.approx(statistics.stdev([10, 12, 14]))
    assert ci["half"] == pytest.approx(4.303 * 2.0 / math.sqrt(3))
    assert (ci["lo"], ci["hi"]) == pytest.approx((12.0 - ci["half"], 12.0 + ci["half"]))
    assert mean_ci([5.0, None])["half"] is None and mean_ci([5.0, None])["mean"] == 5.0
    assert mean_ci([])["mean"] is None and mean_ci([3.0, 3.0])["half"] == 0.0


def _level(conc, rep, tok, ttft, steady_tok=None, status="completed", rate=None):
    s = {"concurrency": conc, "request_rate": rate, "repeat": rep, "status": status, "output_tok_s": tok,
         "ttft_ms": {"mean": ttft}, "tpot_ms": {"mean": 2.0},
         "steady": ({"window": True, "output_tok_s": steady_tok, "ttft_ms": {"mean": ttft}, "tpot_ms": {"mean": 2.0}}
                    if steady_tok is not None else {"window": False, "reason": "x"})}
    return s


def test_aggregate_groups_by_concurrency_and_rate_and_skips_unfinished_levels():
    levels = [_level(4, 0, 100.0, 10.0, 110.0), _level(16, 0, 300.0, 20.0, 330.0),
              _level(4, 1, 110.0, 12.0, None), _level(16, 1, 320.0, 22.0, 350.0),
              _level(4, 2, 120.0, 14.0, 130.0), _level(16, 2, 999.0, 99.0, 999.0, status="cancelled"),
              _level(16, 0, 50.0, 1.0, rate=5.0)]
    assert has_repeats(levels) and not has_repeats(levels[:2])
    rows = aggregate(levels)
    assert [(r["concurrency"], r["request_rate"], r["repeats"]) for r in rows] == [(4, None, 3), (16, None, 2),
                                                                                    (16, 5.0, 1)]
    four = rows[0]
    assert four["output_tok_s"]["mean"] == 110.0 and four["output_tok_s"]["n"] == 3
    assert four["ttft_mean_ms"]["half"] == pytest.approx(4.303 * 2.0 / math.sqrt(3))
    assert four["steady_output_tok_s"]["n"] == 2 and four["steady_output_tok_s"]["mean"] == 120.0  # no window: out
    assert rows[1]["output_tok_s"]["mean"] == 310.0  # the cancelled repeat does not count
    assert rows[2]["output_tok_s"]["half"] is None


def test_formatting():
    assert format_ci(mean_ci([10.0, 12.0, 14.0])) == "12.0 ± 5.0"
    assert format_ci(mean_ci([1234.5])) == "1,234.5" and format_ci(mean_ci([])) == "-" and format_ci(None) == "-"
    row = interval_rows([_level(4, 0, 100.0, 10.0, 110.0), _level(4, 1, 120.0, 10.0, 130.0)])[0]
    assert row["out tok/s (whole)"].startswith("110.0 ± ") and row["out tok/s (steady)"].startswith("120.0 ± ")
    assert row["repeats"] == 2 and row["rate req/s"] == "-"


def test_level_rows_feed_the_intervals():
    from types import SimpleNamespace as NS

    from bench.repeats import interval_for, summaries_of

    rows = [NS(concurrency=4, request_rate=None, repeat=k, status="completed", summary=_level(4, k, tok, 10.0, tok))
            for k, tok in enumerate((100.0, 120.0))]
    rows.append(NS(concurrency=4, request_rate=None, repeat=2, status="failed", summary={}))
    assert [s["status"] for s in summaries_of(rows)] == ["completed", "completed", "failed"]
    ci = interval_for(rows, 4, float("nan"))
    assert ci["repeats"] == 2 and ci["out tok/s (whole)"].startswith("110.0 ± ")
    assert interval_for(rows, 8, None) == {}
