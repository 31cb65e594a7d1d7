"""A mergeable log-bucketed histogram for latencies (the pooled inter-token latency of a level).

A 10,000-user level streams millions of inter-chunk gaps; keeping every gap is too much, so each load
generator shard folds its gaps into one of these and the shards are merged at the end of the level.

Buckets grow geometrically (DDSketch style): bucket i holds values in (g^(i-1), g^i] nanoseconds with
g = (1 + r) / (1 - r), and reports 2 g^i / (g + 1), so any quantile is within relative error r (1%) of a
real value of that rank. Gaps under `zero_ns` (1 us: chunks that arrived in the same socket read) go to
a zero bucket and report as 0. Count, sum, sum of squares, min and max are kept exactly, so mean, std,
min and max are exact; only percentiles are approximate.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

REL_ERR = 0.01
GAMMA = (1 + REL_ERR) / (1 - REL_ERR)
_LOG_GAMMA = math.log(GAMMA)
ZERO_NS = 1_000            # below this a gap counts as "same read": reported as 0
MAX_NS = 24 * 3600 * 10**9  # anything longer is clamped into the last bucket (a day is not an ITL)
N_BUCKETS = int(math.ceil(math.log(MAX_NS) / _LOG_GAMMA)) + 1


class LogHistogram:
    """Non-negative integer durations in nanoseconds; quantiles in ms with <= 1% relative error."""

    __slots__ = ("counts", "zero", "count", "sum_ns", "sumsq_ns", "min_ns", "max_ns")

    def __init__(self) -> None:
        self.counts = np.zeros(N_BUCKETS, dtype=np.int64)
        self.zero = 0           # values < ZERO_NS
        self.count = 0
        self.sum_ns = 0          # Python ints: exact, no overflow
        self.sumsq_ns = 0.0      # float: only feeds the std
        self.min_ns: int | None = None
        self.max_ns: int | None = None

    # -- filling -----------------------------------------------------------------------------------
    def add_many(self, values_ns: Any) -> None:
        """Add an array-like of int nanoseconds (vectorised: this is how shards flush their gaps)."""
        v = np.asarray(values_ns, dtype=np.int64)
        if v.size == 0:
            return
        if int(v.min()) < 0:
            raise ValueError("LogHistogram takes non-negative durations only")
        self.count += int(v.size)
        self.sum_ns += int(v.sum())
        vf = v.astype(np.float64)
        self.sumsq_ns += float(np.dot(vf, vf))
        lo, hi = int(v.min()), int(v.max())
        self.min_ns = lo if self.min_ns is None else min(self.min_ns, lo)
        self.max_ns = hi if self.max_ns is None else max(self.max_ns, hi)
        small = v < ZERO_NS
        self.zero += int(small.sum())
        big = vf[~small]
        if big.size:
            idx = np.ceil(np.log(np.minimum(big, MAX_NS)) / _LOG_GAMMA).astype(np.int64)
            self.counts += np.bincount(np.clip(idx, 0, N_BUCKETS - 1), minlength=N_BUCKETS)

    def add_zeros(self, n: int) -> None:
        """n gaps of 0 (chunks that arrived in the same read), without building an array."""
        if n <= 0:
            return
        self.count += n
        self.zero += n
        self.min_ns = 0
        self.max_ns = 0 if self.max_ns is None else self.max_ns

    def add(self, value_ns: int) -> None:
        self.add_many([value_ns])

    def merge(self, other: "LogHistogram") -> "LogHistogram":
        """Fold `other` into self (in place) and return self."""
        self.counts += other.counts
        self.zero += other.zero
        self.count += other.count
        self.sum_ns += other.sum_ns
        self.sumsq_ns += other.sumsq_ns
        for attr, pick in (("min_ns", min), ("max_ns", max)):
            mine, theirs = getattr(self, attr), getattr(other, attr)
            setattr(self, attr, theirs if mine is None else mine if theirs is None else pick(mine, theirs))
        return self

    # -- reading -----------------------------------------------------------------------------------
    @staticmethod
    def bucket_value_ns(i: int) -> float:
        return 2 * GAMMA**i / (GAMMA + 1)

    def _order_stat_ns(self, k: int, cum: np.ndarray) -> float:
        """Approximate value of the k-th smallest sample (0-based), clamped to the exact min/max
        (which are also returned as such for the first and last rank)."""
        if k == 0:
            return float(self.min_ns)
        if k >= self.count - 1:
            return float(self.max_ns)
        if k < self.zero:
            v = 0.0
        else:
            i = int(np.searchsorted(cum, k - self.zero, side="right"))
            v = self.bucket_value_ns(i)
        return float(min(max(v, self.min_ns or 0), self.max_ns or 0))

    def quantile_ms(self, pct: float) -> float | None:
        """Percentile like numpy's default (linear between the two nearest ranks), in ms."""
        if self.count == 0:
            return None
        if not 0 <= pct <= 100:
            raise ValueError(f"percentile {pct} outside 0..100")
        cum = np.cumsum(self.counts)
        rank = pct / 100 * (self.count - 1)
        lo = int(math.floor(rank))
        v_lo = self._order_stat_ns(lo, cum)
        if rank == lo:
            return v_lo / 1e6
        v_hi = self._order_stat_ns(lo + 1, cum)
        return (v_lo + (rank - lo) * (v_hi - v_lo)) / 1e6

    @property
    def mean_ms(self) -> float | None:
        return self.sum_ns / self.count / 1e6 if self.count else None

    @property
    def std_ms(self) -> float | None:
        """Population std (numpy's default, as `vllm bench serve` reports it)."""
        if not self.count:
            return None
        mean = self.sum_ns / self.count
        return math.sqrt(max(self.sumsq_ns / self.count - mean * mean, 0.0)) / 1e6

    def summary_ms(self, percentiles: tuple[float, ...] = (50, 90, 95, 99)) -> dict[str, float | None]:
        out: dict[str, float | None] = {
            "n": self.count,
            "mean": self.mean_ms,
            "std": self.std_ms,
            "min": self.min_ns / 1e6 if self.min_ns is not None else None,
            "max": self.max_ns / 1e6 if self.max_ns is not None else None,
        }
        for p in percentiles:
            out[f"p{p:g}"] = self.quantile_ms(p)
        return out

    # -- storage (JSON-friendly, sparse) -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        nz = np.nonzero(self.counts)[0]
        return {
            "rel_err": REL_ERR, "zero_ns": ZERO_NS, "zero": self.zero, "count": self.count,
            "sum_ns": self.sum_ns, "sumsq_ns": self.sumsq_ns, "min_ns": self.min_ns, "max_ns": self.max_ns,
            "buckets": {str(int(i)): int(self.counts[i]) for i in nz},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LogHistogram":
        if d.get("rel_err") != REL_ERR or d.get("zero_ns") != ZERO_NS:
            raise ValueError("histogram was stored with different bucket parameters")
        h = cls()
        h.zero, h.count, h.sum_ns, h.sumsq_ns = int(d["zero"]), int(d["count"]), int(d["sum_ns"]), float(d["sumsq_ns"])
        h.min_ns, h.max_ns = d["min_ns"], d["max_ns"]
        for i, c in d["buckets"].items():
            h.counts[int(i)] = c
        return h

    def __repr__(self) -> str:
        return f"LogHistogram(n={self.count}, mean_ms={self.mean_ms}, p50_ms={self.quantile_ms(50)})"
