"""Cost projection from measured throughput: pure math, no I/O.

Throughput is *output* tokens per second of one replica (the sweep's measured `output_tok_s`, which
already divides by the level's wall time), served by `gpu_count` GPUs priced per GPU-hour. Two daily
costs are given because people mean both: *pro-rated* (you pay only for the GPU-seconds the tokens
take, e.g. a shared or serverless pool) and *provisioned* (whole replicas running 24 h, sized for the
average rate times a peak factor).

A deployment's non-LLM services (translate, TTS, ASR: bench/service_load.py) answer requests, not tokens:
`usd_per_thousand_requests` is the same whole-box arithmetic per 1,000 successful requests of one service (the box's
$ per second over that service's ok req/s). It charges the whole box to that one rate, as $ per 1M tokens charges it
to the LLM tokens: the two overlap (the same box-seconds) and never add up.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

SECONDS_PER_DAY = 86_400


def money_digits(v: float) -> str:
    """0.0042 / 0.00014 / 0.000091: at least two significant figures, never an exponent (four or five fixed
    decimals would show 0.0001 for both 0.00014 and 0.00009)."""
    if v <= 0:
        return f"{v:.4f}"
    return f"{v:.{max(4, 1 - math.floor(math.log10(v)))}f}"


def _usd_per_unit(rate_per_s: float | None, gpu_count: int, price_per_gpu_hour: float) -> float | None:
    """$ per one unit (token, request) at `rate_per_s` units/s on `gpu_count` GPUs. None when nothing was produced."""
    if not rate_per_s or rate_per_s <= 0:
        return None
    usd_per_s = gpu_count * price_per_gpu_hour / 3600.0
    return usd_per_s / rate_per_s


def usd_per_million_tokens(tok_s: float | None, gpu_count: int, price_per_gpu_hour: float) -> float | None:
    """$ per 1M tokens at `tok_s` tokens/s on `gpu_count` GPUs. None when nothing was produced."""
    usd = _usd_per_unit(tok_s, gpu_count, price_per_gpu_hour)
    return None if usd is None else usd * 1e6


def usd_per_thousand_requests(ok_req_s: float | None, gpu_count: int, price_per_gpu_hour: float) -> float | None:
    """$ per 1,000 successful requests at `ok_req_s` ok requests/s on `gpu_count` GPUs (the whole box charged to
    that rate; see the module docstring). None when no request succeeded: failures are counted elsewhere, and
    they make each ok request dearer because only ok requests are in the rate."""
    usd = _usd_per_unit(ok_req_s, gpu_count, price_per_gpu_hour)
    return None if usd is None else usd * 1e3


def gpus_needed(target_tok_s: float, tok_s_per_replica: float, gpus_per_replica: int) -> int:
    """GPUs for `target_tok_s`, in whole replicas of `gpus_per_replica` (a TP group cannot be split)."""
    if target_tok_s <= 0:
        return 0
    if tok_s_per_replica <= 0:
        raise ValueError("throughput per replica must be positive")
    return math.ceil(target_tok_s / tok_s_per_replica - 1e-9) * gpus_per_replica


@dataclass(frozen=True)
class DailyCost:
    tokens_per_day: float
    avg_tok_s: float
    replicas: int            # provisioned for avg rate x peak factor
    gpus: int
    usd_provisioned: float   # replicas x GPUs x price x 24 h
    usd_prorated: float      # GPU-seconds actually needed x price
    utilisation: float       # of the provisioned replicas, at the average rate


def daily_cost(tokens_per_day: float, tok_s_per_replica: float, gpus_per_replica: int, price_per_gpu_hour: float,
               peak_factor: float = 1.0) -> DailyCost:
    if tok_s_per_replica <= 0:
        raise ValueError("throughput per replica must be positive")
    if peak_factor < 1:
        raise ValueError("peak factor must be >= 1 (peak rate / average rate)")
    avg = tokens_per_day / SECONDS_PER_DAY
    gpus = gpus_needed(avg * peak_factor, tok_s_per_replica, gpus_per_replica)
    replicas = gpus // gpus_per_replica
    provisioned = gpus * price_per_gpu_hour * 24
    prorated = tokens_per_day / tok_s_per_replica / 3600 * gpus_per_replica * price_per_gpu_hour
    util = avg / (replicas * tok_s_per_replica) if replicas else 0.0
    return DailyCost(tokens_per_day, avg, replicas, gpus, provisioned, prorated, util)


@dataclass(frozen=True)
class LevelPerf:
    """What cost needs of one measured level (built from a Level row / its summary JSON)."""

    concurrency: int
    output_tok_s: float | None
    n_ok: int = 0
    n_err: int = 0
    client_bound: bool = False
    goodput_req_s: float | None = None
    # metric -> {"p50": ms, "p99": ms, ...}, as in the Level.summary JSON
    latency: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    @classmethod
    def from_summary(cls, summary: Mapping, **overrides) -> "LevelPerf":
        lat = {m: summary[m] for m in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms") if isinstance(summary.get(m), Mapping)}
        kw = dict(
            concurrency=int(summary.get("concurrency") or 0),
            output_tok_s=summary.get("output_tok_s"),
            n_ok=int(summary.get("n_ok") or 0),
            n_err=int(summary.get("n_err") or 0),
            client_bound=bool(summary.get("client_bound", False)),
            goodput_req_s=summary.get("goodput_req_s"),
            latency=lat,
        )
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kw)


@dataclass(frozen=True)
class LevelCost:
    concurrency: int
    output_tok_s: float | None
    usd_per_m_output: float | None
    meets_slo: bool
    reasons: list[str]       # why it does not meet the SLOs (empty when it does)


def check_slo(level: LevelPerf, slo: Mapping[str, float | None], percentile: str = "p99",
              max_error_rate: float = 0.0) -> list[str]:
    """Reasons `level` misses the SLOs at `percentile` (e.g. "p99"); [] when it meets them all.

    slo maps ttft_ms / tpot_ms / e2e_ms / itl_ms to thresholds (None = not set). A level with more failed
    requests than `max_error_rate`, or where the client was the bottleneck, never qualifies: its numbers
    do not describe the server.
    """
    reasons: list[str] = []
    total = level.n_ok + level.n_err
    if total == 0 or not level.output_tok_s:
        return ["no successful requests"]
    if level.n_err / total > max_error_rate:
        reasons.append(f"{level.n_err}/{total} requests failed")
    if level.client_bound:
        reasons.append("client-bound (load generator was the bottleneck)")
    for metric, limit in slo.items():
        if limit is None:
            continue
        summary = level.latency.get(metric) or {}
        value = summary.get(percentile)
        if value is None and metric == "tpot_ms" and level.n_ok > 0 and summary.get("n") == 0:
            value = 0.0  # every request produced 1 token: no decode step, TPOT 0 (as vLLM's goodput and is_good)
        if value is None:
            reasons.append(f"{metric} {percentile} not measured")
        elif value > limit:
            reasons.append(f"{metric} {percentile} {value:.0f} ms > {limit:.0f} ms")
    return reasons


def level_costs(levels: Iterable[LevelPerf], gpu_count: int, price_per_gpu_hour: float,
                slo: Mapping[str, float | None] | None = None, percentile: str = "p99",
                max_error_rate: float = 0.0) -> list[LevelCost]:
    out = []
    for lv in sorted(levels, key=lambda x: x.concurrency):
        reasons = check_slo(lv, slo or {}, percentile, max_error_rate)
        out.append(LevelCost(lv.concurrency, lv.output_tok_s,
                             usd_per_million_tokens(lv.output_tok_s, gpu_count, price_per_gpu_hour),
                             not reasons, reasons))
    return out


def cheapest_meeting_slo(costs: Sequence[LevelCost]) -> LevelCost | None:
    """The level with the lowest $/1M output tokens among those meeting the SLOs (ties: lower concurrency)."""
    ok = [c for c in costs if c.meets_slo and c.usd_per_m_output is not None]
    return min(ok, key=lambda c: (c.usd_per_m_output, c.concurrency)) if ok else None


# SLO presets: MLPerf Inference's p99 latency bounds for Llama-2-70B (the "interactive" scenario added in v5.0, and
# the original server scenario). They are that benchmark's bounds, not a rule for every model; "from the run" keeps
# the SLOs the run was launched with.
SLO_PRESETS: dict[str, dict[str, float | None]] = {
    "MLPerf interactive (p99 TTFT 450 ms, TPOT 40 ms)": {"ttft_ms": 450.0, "tpot_ms": 40.0, "e2e_ms": None},
    "MLPerf server (p99 TTFT 2 s, TPOT 200 ms)": {"ttft_ms": 2000.0, "tpot_ms": 200.0, "e2e_ms": None},
}


def latency_break(costs: Sequence[LevelCost]) -> LevelCost | None:
    """The lowest concurrency that misses the SLOs after a lower one met them: where latency breaks as load grows.
    None when every level meets them, or none does (then nothing 'breaks': it never held)."""
    held = False
    for c in sorted(costs, key=lambda x: x.concurrency):
        if c.meets_slo:
            held = True
        elif held:
            return c
    return None
