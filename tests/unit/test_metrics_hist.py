"""bench.hist.LogHistogram: the pooled-ITL sketch (<= 1% relative error on percentiles, exact moments)."""
from __future__ import annotations

import numpy as np
import pytest

from bench.hist import REL_ERR, ZERO_NS, LogHistogram


def test_percentiles_within_relative_error_of_numpy():
    rng = np.random.default_rng(7)
    # Lognormal gaps around 20 ms with a heavy tail, like decode steps with stalls.
    v = (rng.lognormal(mean=np.log(20e6), sigma=0.8, size=50_000)).astype(np.int64)
    h = LogHistogram()
    for part in np.array_split(v, 7):
        h.add_many(part)
    assert h.count == v.size
    assert h.mean_ms == pytest.approx(v.mean() / 1e6, rel=1e-12)
    assert h.std_ms == pytest.approx(v.std() / 1e6, rel=1e-9)
    assert h.summary_ms()["max"] == v.max() / 1e6
    for p in (1, 10, 50, 90, 95, 99, 99.9):
        exact = np.percentile(v, p) / 1e6
        assert h.quantile_ms(p) == pytest.approx(exact, rel=REL_ERR * 1.05), p


def test_small_sets_interpolate_like_numpy():
    h = LogHistogram()
    h.add_many([10_000_000, 20_000_000])          # 10 ms, 20 ms
    assert h.quantile_ms(0) == 10.0 and h.quantile_ms(100) == 20.0   # clamped to the exact min/max
    assert h.quantile_ms(50) == pytest.approx(15.0, rel=REL_ERR)
    assert h.quantile_ms(90) == pytest.approx(19.0, rel=REL_ERR)


def test_zero_bucket_for_coalesced_chunks():
    h = LogHistogram()
    h.add_many([0, 0, 0, ZERO_NS - 1, 5_000_000])
    assert h.zero == 4 and h.count == 5
    assert h.quantile_ms(50) == 0.0
    assert h.quantile_ms(100) == 5.0


def test_merge_equals_adding_everything_and_round_trips():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 10**9, 1000), rng.integers(10**5, 10**7, 500)
    ha, hb, hall = LogHistogram(), LogHistogram(), LogHistogram()
    ha.add_many(a)
    hb.add_many(b)
    hall.add_many(np.concatenate([a, b]))
    ha.merge(hb)
    da, dall = ha.to_dict(), hall.to_dict()
    assert da.pop("sumsq_ns") == pytest.approx(dall.pop("sumsq_ns"), rel=1e-12)  # float sum order
    assert da == dall
    back = LogHistogram.from_dict(hall.to_dict())
    assert back.to_dict() == hall.to_dict() and back.quantile_ms(99) == hall.quantile_ms(99)
    assert LogHistogram().merge(LogHistogram()).count == 0
    assert LogHistogram().merge(hb).min_ns == int(b.min())


def test_empty_and_bad_input():
    h = LogHistogram()
    assert h.quantile_ms(50) is None and h.mean_ms is None and h.summary_ms()["p99"] is None
    with pytest.raises(ValueError):
        h.add_many([-1])
    h.add(3)
    with pytest.raises(ValueError):
        h.quantile_ms(101)
