"""Level summary from request results, with the definitions of `vllm bench serve` (benchmarks/serve.py,
calculate_metrics) so numbers compare one to one:

  output_tok_s  = sum(output tokens of OK requests) / level duration
  total_tok_s   = sum(input + output tokens of OK requests) / level duration
  req_s         = OK requests / level duration
  TTFT, E2E     per OK request; TPOT = (E2E - TTFT) / (output_tokens - 1) for OK requests with > 1 token
  ITL           the pooled inter-chunk gaps of all OK requests (from the level's histogram)
  goodput_req_s = OK requests meeting every SLO that is set / duration (TPOT counts as 0 for 1-token
                  requests, as vLLM does); with no SLO set every OK request is good (= req_s), and
                  "goodput_slo_set" says which case it is
  percentiles   numpy's default (linear between ranks); std is the population std

These are whole-level figures (ramp-up and drain included, as vllm bench's are); the steady-state ones
(bench/steady.py) are stored beside them by the sweep as summary["steady"].

Warm-up requests are excluded everywhere. Token counts are the server's usage only. Failed requests are
counted (n_err, errors by message) and never silently dropped.

Works on RequestResult objects or anything with the same attributes (e.g. storage Request rows), so a
summary can be recomputed from the database.
"""
from __future__ import annotations

import collections
from typing import Any, Sequence

import numpy as np

from bench.config import SLO

PERCENTILES = (50, 90, 95, 99)


def stats(values: Sequence[float]) -> dict[str, float | None]:
    """mean/std/min/max/p50/p90/p95/p99 of `values` (ms); all None when empty."""
    keys = ["n", "mean", "std", "min", "max"] + [f"p{p}" for p in PERCENTILES]
    if len(values) == 0:
        return {k: (0 if k == "n" else None) for k in keys}
    a = np.asarray(values, dtype=np.float64)
    out: dict[str, float | None] = {"n": int(a.size), "mean": float(a.mean()), "std": float(a.std()),
                                    "min": float(a.min()), "max": float(a.max())}
    for p, v in zip(PERCENTILES, np.percentile(a, PERCENTILES)):
        out[f"p{p}"] = float(v)
    return out


def tpot_ms(r: Any) -> float | None:
    """Time per output token after the first, or None for requests with <= 1 output token."""
    if r.output_tokens is None or r.output_tokens <= 1 or r.ttft_ms is None or r.e2e_ms is None:
        return None
    return (r.e2e_ms - r.ttft_ms) / (r.output_tokens - 1)


def is_good(r: Any, slo: SLO) -> bool:
    """An OK request that meets every SLO that is set (limits inclusive, as in vLLM)."""
    if slo.ttft_ms is not None and not r.ttft_ms <= slo.ttft_ms:
        return False
    if slo.tpot_ms is not None and not (tpot_ms(r) or 0.0) <= slo.tpot_ms:
        return False
    if slo.e2e_ms is not None and not r.e2e_ms <= slo.e2e_ms:
        return False
    return True


def _per_s(x: float, duration_s: float) -> float | None:
    return x / duration_s if duration_s > 0 else None


def summarize(results: Sequence[Any], outcome: Any, slo: SLO) -> dict[str, Any]:
    """The level summary stored on the level row (JSON). `results` may include warm-up requests."""
    measured = [r for r in results if not r.warmup]
    ok = [r for r in measured if r.ok]
    err = [r for r in measured if not r.ok]
    dur = float(outcome.duration_s)
    out_tok = sum(r.output_tokens or 0 for r in ok)
    in_tok = sum(r.input_tokens or 0 for r in ok)
    tpots = [t for t in (tpot_ms(r) for r in ok) if t is not None]
    slo_set = any(v is not None for v in (slo.ttft_ms, slo.tpot_ms, slo.e2e_ms))
    n_good = sum(1 for r in ok if is_good(r, slo))
    errors = collections.Counter((r.error or "unknown error")[:160] for r in err)
    short = [r for r in ok if getattr(r, "max_tokens", None) is not None and r.output_tokens != r.max_tokens]
    itl = outcome.itl
    shards = getattr(outcome, "shards", []) or []
    return {
        "concurrency": getattr(outcome, "concurrency", None),
        "request_rate": getattr(outcome, "request_rate", None),
        "n_sent": len(measured),
        "n_ok": len(ok),
        "n_err": len(err),
        "n_warmup": len(results) - len(measured),
        # The load generator's own tally; differs from n_sent only if results were lost on the way.
        "accounted": len(measured) == outcome.n_sent,
        "duration_s": dur,
        "start_ns": getattr(outcome, "start_ns", None),
        "end_ns": getattr(outcome, "end_ns", None),
        "input_tokens": in_tok,
        "output_tokens": out_tok,
        "output_tok_s": _per_s(out_tok, dur),
        "total_tok_s": _per_s(in_tok + out_tok, dur),
        "req_s": _per_s(len(ok), dur),
        "goodput_req_s": _per_s(n_good, dur),
        "n_good": n_good,
        "goodput_slo_set": slo_set,
        "slo": slo.model_dump(),
        "ttft_ms": stats([r.ttft_ms for r in ok]),
        "tpot_ms": stats(tpots),
        "itl_ms": itl.summary_ms(PERCENTILES),
        "e2e_ms": stats([r.e2e_ms for r in ok]),
        "queue_ms": stats([r.queue_ms for r in measured if r.queue_ms is not None]),
        "input_tokens_per_req": stats([r.input_tokens for r in ok if r.input_tokens is not None]),
        "output_tokens_per_req": stats([r.output_tokens for r in ok if r.output_tokens is not None]),
        # OK requests whose usage disagrees with the requested fixed length (max_model_len cut, EOS honoured).
        "n_short_output": len(short),
        "errors": dict(errors.most_common(10)),
        "n_error_kinds": len(errors),
        "client_cpu_pct": outcome.client_cpu_pct,
        "client_cpu_s": getattr(outcome, "client_cpu_s", None),
        "client_bound": bool(outcome.client_bound),
        "client_procs": getattr(outcome, "procs", None),
        "client_loop_lag_max_ms": max((s.loop_lag_max_ms for s in shards), default=None),
        "client_peak_cpu_pct": max((s.peak_cpu_pct for s in shards), default=None),
        # requests re-sent once because the server had closed their idle keep-alive connection (never an error)
        "stale_retries": sum(getattr(s, "stale_retries", 0) for s in shards),
        # TCP connects during the measured phase: 0 when every user kept its pre-opened connection; more means the
        # server closed idle connections (or every response), and those requests paid a connect in their TTFT
        "new_connections": sum(getattr(s, "new_connections", 0) for s in shards),
        # text prompts that missed their exact token length after bench.prompts' adjustment rounds (their true
        # length is in input_tokens_per_req, from the server's usage)
        "prompts_inexact": sum(getattr(s, "prompts_inexact", 0) for s in shards),
        # ... and text prompts made inside the measured phase because the shard's prompt thread had not made them yet
        # (each costs the client milliseconds of tokenizer work while it streams; 0 is the normal case)
        "prompts_inline": sum(getattr(s, "prompts_inline", 0) for s in shards),
        "cancelled": bool(outcome.cancelled),
        "error": getattr(outcome, "error", None),
        "itl_hist": itl.to_dict(),
    }


# The per-instance figures kept beside the whole-box summary of a deployment's level (summary["instances"]).
INSTANCE_KEYS = ("n_sent", "n_ok", "n_err", "input_tokens", "output_tokens", "output_tok_s", "total_tok_s", "req_s",
                 "goodput_req_s", "ttft_ms", "tpot_ms", "e2e_ms", "queue_ms", "errors")


class _NoItl:
    """ITL is pooled in the load generator's one histogram per level: per instance there is none to report."""

    def summary_ms(self, _percentiles) -> dict:
        return {}

    def to_dict(self) -> dict:
        return {}


def per_instance(results: Sequence[Any], outcome: Any, slo: SLO, targets: Sequence[Any]) -> dict[str, dict]:
    """Per instance of a deployment (targets: bench.loadgen.Target), the level's figures over the requests it served
    (rates over the same level wall time as the box's, so the instances' throughputs add up to the box's), with its
    weight and the share of the measured requests it really got. Requests with no instance (a result lost before
    routing was known) stay in the box's figures only."""
    class _View:  # the outcome, minus the pooled ITL histogram
        def __getattr__(self, k):
            return _NoItl() if k == "itl" else getattr(outcome, k)

    total_w = sum(t.weight for t in targets) or 1.0
    n_measured = sum(1 for r in results if not r.warmup) or 1
    out: dict[str, dict] = {}
    for t in targets:
        mine = [r for r in results if r.instance_id == t.instance_id]
        full = summarize(mine, _View(), slo)
        row = {k: full[k] for k in INSTANCE_KEYS}
        row.update(instance_id=t.instance_id, model=t.model, weight=t.weight, weight_share=t.weight / total_w,
                   request_share=full["n_sent"] / n_measured)
        out[t.name or str(t.instance_id)] = row
    return out
