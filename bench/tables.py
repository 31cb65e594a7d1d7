"""The level table as people read it: the columns they look at, units in the headers, human number formats, "–"
where a value does not exist (a duration-bound level has no request target, a running level no percentiles yet).

Pure: takes the rows of `storage.queries.level_table` (plain dicts) and returns rows of display strings, in column
order. The dashboard shows these by default and the raw rows behind an "All columns" toggle. Optional figures
appear only when some level has them: a request rate, a repeat number, steady-state figures (summary["steady"],
flattened by level_table into steady_* keys), energy per token, the roofline share.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

DASH = "–"


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if f != f else f


def fmt_count(v: Any) -> str:
    f = _num(v)
    return DASH if f is None else f"{f:,.0f}"


def fmt_rate(v: Any) -> str:
    """tok/s and the like: whole numbers from 100 up, one decimal below, two below 10."""
    f = _num(v)
    if f is None:
        return DASH
    return f"{f:,.0f}" if abs(f) >= 100 else f"{f:,.1f}" if abs(f) >= 10 else f"{f:,.2f}"


fmt_ms = fmt_rate  # latencies read the same way: 2.34 ms, 45.6 ms, 1,234 ms


def fmt_s(v: Any) -> str:
    f = _num(v)
    return DASH if f is None else f"{f:,.1f}"


def fmt_small(v: Any) -> str:
    """J per token: 0.02-0.5 on an H100, so three significant digits."""
    f = _num(v)
    return DASH if f is None else f"{f:.3g}"


def _requests(r: Mapping) -> str:
    ok, total = r.get("n_ok"), r.get("n_requested")
    return f"{fmt_count(ok)} / {fmt_count(total)}" if total is not None else fmt_count(ok)


def _cpu(r: Mapping) -> str:
    cpu = _num(r.get("client_cpu_pct"))
    return (DASH if cpu is None else f"{cpu:.0f}%") + (" client-bound!" if r.get("client_bound") else "")


def _server_cpu(r: Mapping) -> str:
    """The engine's busiest process (its API server when the frontend is the limit), % of one core."""
    cpu = _num(r.get("server_cpu_pct"))
    if cpu is None:
        return DASH
    return f"{cpu:.0f}% {r.get('server_cpu_proc') or ''}".rstrip() + (" frontend-bound!" if r.get("frontend_bound")
                                                                     else "")


Column = tuple[str, Callable[[Mapping], str], Callable[[Sequence[Mapping]], bool] | None]


def _has(key: str) -> Callable[[Sequence[Mapping]], bool]:
    return lambda rows: any(r.get(key) is not None for r in rows)


def _col(key: str, fmt: Callable[[Any], str]) -> Callable[[Mapping], str]:
    return lambda r: fmt(r.get(key))


# (header, cell, shown only when this says so); headers carry their units
COLUMNS: list[Column] = [
    ("concurrency", _col("concurrency", fmt_count), None),
    ("rate req/s", _col("request_rate", fmt_rate), _has("request_rate")),
    ("repeat", _col("repeat", fmt_count), lambda rows: any((r.get("repeat") or 1) > 1 for r in rows)),  # 1-based
    ("status", lambda r: str(r.get("status") or DASH), None),
    ("ok / planned", _requests, None),
    ("failed", _col("n_err", fmt_count), None),
    ("duration s", _col("duration_s", fmt_s), None),
    ("output tok/s", _col("output_tok_s", fmt_rate), None),
    ("tok/s per user", _col("tok_s_per_user", fmt_rate), None),
    ("tok/s per GPU", _col("tok_s_per_gpu", fmt_rate), None),
    ("req/s", _col("req_s", fmt_rate), None),
    ("goodput req/s", _col("goodput_req_s", fmt_rate), None),
    ("TTFT p50 ms", _col("ttft_p50_ms", fmt_ms), None),
    ("TTFT p99 ms", _col("ttft_p99_ms", fmt_ms), None),
    ("TPOT p50 ms", _col("tpot_p50_ms", fmt_ms), None),
    ("ITL p50 ms", _col("itl_p50_ms", fmt_ms), None),
    ("E2E p50 ms", _col("e2e_p50_ms", fmt_ms), None),
    ("steady s", _col("steady_s", fmt_s), _has("steady_s")),
    ("steady output tok/s", _col("steady_output_tok_s", fmt_rate), _has("steady_output_tok_s")),
    ("steady req/s", _col("steady_req_s", fmt_rate), _has("steady_req_s")),
    ("steady TTFT p50 ms", _col("steady_ttft_p50_ms", fmt_ms), _has("steady_ttft_p50_ms")),
    ("steady TPOT p50 ms", _col("steady_tpot_p50_ms", fmt_ms), _has("steady_tpot_p50_ms")),
    ("steady E2E p50 ms", _col("steady_e2e_p50_ms", fmt_ms), _has("steady_e2e_p50_ms")),
    ("J / output token", _col("j_per_output_token", fmt_small), _has("j_per_output_token")),
    ("roofline %", _col("roofline_pct", fmt_rate), _has("roofline_pct")),
    ("client CPU", _cpu, None),
    ("server CPU", _server_cpu, _has("server_cpu_pct")),
]


def readable_levels(rows: Sequence[Mapping]) -> list[dict[str, str]]:
    """Display rows (header -> text) of the columns people read; optional columns only where some row has them."""
    cols = [(h, cell) for h, cell, shown in COLUMNS if shown is None or shown(rows)]
    return [{h: cell(r) for h, cell in cols} for r in rows]
