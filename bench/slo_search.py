"""SLO search: the highest concurrency (or request rate) at which chosen latency percentiles meet their limits.

Pure logic, no I/O: the sweep (bench/sweep.py) asks `SloSearch.next_value()` for the next probe, runs it as a normal
stored level, and hands back whether it met the limits (`level_meets` on the level summary). The search

1. probes up exponentially from `start` (x `factor` each time) until a probe fails or `max_value` is reached;
2. then bisects between the highest passing and the lowest failing probe until they are within `tolerance`
   (relative, and at least 1 apart for integer concurrency), or `max_levels` probes have run.

Every probe after the first failure lies between a passing and a failing probe, so the answer (the highest passing
probe, always one that was measured) sits right below a measured failure even when the latency curve is noisy or not
monotone: the search finds *a* boundary, not necessarily the highest passing point anywhere (a level far above a
failure is never probed). A start that fails bisects down towards `min_value`; if that fails too, nothing meets.

Levels needed (`level_budget`): at most ceil(log_factor(max/start)) + 1 probes up, then ceil(log2(gap / unit)) to
bisect the last bracket (unit 1 for exact integer concurrency, else tolerance x its lower end): 20 for 1..1024 exact,
9 for 4..256 at tolerance 0.25; `max_levels` caps it (default 12).

Presets follow MLPerf Inference's Server-scenario latency limits (99th percentile TTFT and TPOT), from
mlcommons/inference loadgen/mlperf.conf (commit 001712e9daf80386e0dda43f97b8f36981d792c4):
  llama3_1-8b     standard TTFT 2000 ms / TPOT 100 ms, interactive TTFT 500 ms / TPOT 30 ms
  llama2-70b      standard TTFT 2000 ms / TPOT 200 ms, interactive TTFT 450 ms / TPOT 40 ms
  llama3_1-405b   standard TTFT 6000 ms / TPOT 175 ms, interactive TTFT 4500 ms / TPOT 80 ms
  (*.Server.target_latency_percentile = 99)
Melt picks the row by the model's total parameters: <= 15 B the 8B row, <= 150 B the 70B row, else the 405B row.
"""
from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Metric = Literal["ttft", "tpot", "e2e"]
METRICS: tuple[str, ...] = ("ttft", "tpot", "e2e")
PERCENTILES = (50, 90, 95, 99)  # what a level summary stores (bench.metrics.PERCENTILES)

MLPERF_SOURCE = "MLPerf Inference loadgen/mlperf.conf (mlcommons/inference), Server scenario, p99"
# (max total params in B, row name, standard (ttft, tpot) ms, interactive (ttft, tpot) ms)
MLPERF_ROWS = (
    (15.0, "llama3_1-8b", (2000.0, 100.0), (500.0, 30.0)),
    (150.0, "llama2-70b", (2000.0, 200.0), (450.0, 40.0)),
    (math.inf, "llama3_1-405b", (6000.0, 175.0), (4500.0, 80.0)),
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Limit(_Strict):
    """One latency limit: `metric`'s p`percentile` (ms) must be <= `max_ms`."""

    metric: Metric
    percentile: Literal[50, 90, 95, 99] = 99
    max_ms: float = Field(gt=0)

    def label(self) -> str:
        return f"{self.metric.upper()} p{self.percentile} <= {self.max_ms:g} ms"


class SloSearchSpec(_Strict):
    """What to search for and how far. Stored in RunConfig.slo_search (the run's config JSON)."""

    limits: list[Limit] = Field(min_length=1)
    mode: Literal["concurrency", "rate"] = "concurrency"
    start: float = Field(default=1, gt=0, description="first probe (concurrency or req/s)")
    min_value: float = Field(default=1, gt=0, description="lowest value probed when the start fails")
    max_value: float = Field(default=1024, gt=0, description="highest value probed")
    factor: float = Field(default=2.0, gt=1, description="growth of the exponential probe")
    tolerance: float = Field(default=0.0, ge=0, lt=1,
                             description="stop bisecting when hi - lo <= tolerance * lo (and, for concurrency, 1)")
    max_levels: int = Field(default=12, ge=1, le=100)
    max_error_rate: float = Field(default=0.0, ge=0, le=1, description="share of failed requests a level may have")
    concurrency_cap: int = Field(default=1024, ge=1, description="rate mode: the users that carry the arrivals")
    preset: str | None = Field(default=None, description="where the limits came from, e.g. 'mlperf-interactive'")

    @model_validator(mode="after")
    def _bounds(self) -> "SloSearchSpec":
        if not self.min_value <= self.start <= self.max_value:
            raise ValueError(f"SLO search needs min <= start <= max, got {self.min_value:g} <= {self.start:g} <= "
                             f"{self.max_value:g}")
        if len({(x.metric, x.percentile) for x in self.limits}) != len(self.limits):
            raise ValueError("SLO search: give each metric/percentile one limit")
        return self

    @property
    def integer(self) -> bool:
        return self.mode == "concurrency"

    def describe(self) -> str:
        what = "concurrency" if self.integer else "request rate (req/s)"
        return f"highest {what} with " + ", ".join(x.label() for x in self.limits)


def mlperf_preset(kind: Literal["interactive", "standard"], total_params_b: float | None) -> tuple[list[Limit], str]:
    """(limits, row name) of MLPerf's Server-scenario p99 TTFT/TPOT limits for a model of that size (see module
    docstring). Unknown size: the 8B row (the smallest model MLPerf has)."""
    size = total_params_b if total_params_b is not None else 0.0
    for cap, name, std, inter in MLPERF_ROWS:
        if size <= cap:
            ttft, tpot = inter if kind == "interactive" else std
            return [Limit(metric="ttft", percentile=99, max_ms=ttft),
                    Limit(metric="tpot", percentile=99, max_ms=tpot)], name
    raise AssertionError("unreachable: the last row has no size cap")


def level_meets(summary: dict, limits: list[Limit], max_error_rate: float = 0.0) -> tuple[bool, list[dict]]:
    """Does a level summary meet every limit? -> (meets, checks). A level with no OK request, or with a share of
    failed requests above `max_error_rate`, does not meet them (a failure is never a fast request)."""
    checks = []
    sent = summary.get("n_sent") or 0
    err = summary.get("n_err") or 0
    err_rate = err / sent if sent else 1.0
    checks.append({"what": "errors", "value": err_rate, "limit": max_error_rate, "ok": err_rate <= max_error_rate
                   and (summary.get("n_ok") or 0) > 0})
    for lim in limits:
        value = ((summary.get(f"{lim.metric}_ms") or {}).get(f"p{lim.percentile}"))
        ok = value is not None and value <= lim.max_ms
        checks.append({"what": lim.label(), "metric": lim.metric, "percentile": lim.percentile, "value": value,
                       "limit": lim.max_ms, "ok": ok})
    return all(c["ok"] for c in checks), checks


class SloSearch:
    """The bisection state machine. `next_value()` -> the next probe or None when done; `record(value, meets)`."""

    def __init__(self, spec: SloSearchSpec):
        self.spec = spec
        self.probes: list[tuple[float, bool]] = []
        self.lo: float | None = None   # highest passing value (every probe below a failure)
        self.hi: float | None = None   # lowest failing value
        self.reason = ""

    def _round(self, v: float) -> float:
        if self.spec.integer:
            return float(max(int(round(v)), 1))
        return float(f"{v:.4g}")

    def _close_enough(self, lo: float, hi: float) -> bool:
        gap = hi - lo
        if self.spec.integer and gap <= 1:
            return True
        return gap <= self.spec.tolerance * lo or (not self.spec.integer and gap <= 1e-3 * max(lo, 1e-9))

    def next_value(self) -> float | None:
        s = self.spec
        if self.reason:
            return None
        if len(self.probes) >= s.max_levels:
            self.reason = f"stopped after {s.max_levels} levels (max_levels)"
            return None
        if not self.probes:
            return self._round(s.start)
        if self.hi is None:  # still probing up: every probe so far passed
            if self.lo is not None and self.lo >= s.max_value:
                self.reason = f"meets the limits at the upper bound {s.max_value:g}"
                return None
            return self._round(min(self.lo * s.factor, s.max_value))
        lo = self.lo
        if lo is None:  # nothing passed yet: bisect down between min_value and the lowest failure
            if self.hi <= s.min_value:
                self.reason = f"no level meets the limits (even {s.min_value:g} fails)"
                return None
            if s.integer:
                return float(max(min(int((s.min_value + self.hi) // 2), int(self.hi) - 1), int(s.min_value)))
            if self.hi - s.min_value <= max(s.tolerance, 1e-3) * s.min_value:
                return self._round(s.min_value)
            return self._round((s.min_value + self.hi) / 2)
        if self._close_enough(lo, self.hi):
            self.reason = f"bracketed: {lo:g} meets, {self.hi:g} does not"
            return None
        mid = self._round(math.sqrt(lo * self.hi) if self.hi / lo > 4 else (lo + self.hi) / 2)
        if s.integer:
            mid = min(max(mid, lo + 1), self.hi - 1)
        if mid in (v for v, _ in self.probes):
            self.reason = f"bracketed: {lo:g} meets, {self.hi:g} does not"
            return None
        return mid

    def record(self, value: float, meets: bool) -> None:
        self.probes.append((value, meets))
        if meets:
            if self.hi is None or value < self.hi:
                self.lo = value if self.lo is None else max(self.lo, value)
        else:
            self.hi = value if self.hi is None else min(self.hi, value)
            if self.lo is not None and self.lo > self.hi:
                # a passing probe above a failure can only come from an earlier noisy level: keep a consistent
                # bracket (the highest pass below the lowest failure)
                below = [v for v, ok in self.probes if ok and v < self.hi]
                self.lo = max(below) if below else None

    @property
    def done(self) -> bool:
        return bool(self.reason)

    def result(self) -> dict:
        """JSON-ready: the answer (highest passing probe below the lowest failure; None if none passed)."""
        return {"best": self.lo, "lowest_failing": self.hi, "levels": len(self.probes), "reason": self.reason,
                "mode": self.spec.mode, "probes": [{"value": v, "meets": ok} for v, ok in self.probes],
                "limits": [x.model_dump() for x in self.spec.limits], "preset": self.spec.preset}


def level_budget(spec: SloSearchSpec) -> int:
    """The most levels the search can take (the bound the tests state): the probes up to the max, plus bisecting
    the widest bracket the exponential probe can leave down to the tolerance (or to 1 for concurrency)."""
    ups = max(0, math.ceil(math.log(spec.max_value / spec.start, spec.factor) - 1e-9)) + 1
    lo = spec.start * spec.factor ** max(ups - 2, 0)
    gap = min(lo * (spec.factor - 1), spec.max_value - lo) if ups > 1 else spec.start - spec.min_value
    unit = max(1.0 if spec.integer else 1e-3 * spec.min_value, spec.tolerance * lo)
    down = max(0, math.ceil(math.log2(max(gap / unit, 1.0)) - 1e-9))
    return min(spec.max_levels, ups + down)
