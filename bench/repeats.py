"""Repeated levels (--repeat N): mean and 95% confidence interval across the repeats of each (concurrency, rate).

  mean_ci(x)  n values: mean, sample std s (n - 1 in the denominator), half-width = t(0.975, n - 1) * s / sqrt(n)
              (Student t: the repeats are few and their spread is estimated from them); lo/hi = mean -/+ half.
              One value has no interval (half None).
  aggregate   groups level summaries by (concurrency, request rate), completed levels only, and gives mean_ci of
              whole-level output tok/s, mean TTFT and mean TPOT (the vllm bench definitions, bench/metrics.py) and
              of the same three in steady state (bench/steady.py; levels without a steady window are left out of
              those, and n says how many counted).

Pure math and formatting; the CLI (bench/report.py) and the pages show `format_ci` strings.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

# Two-sided 95% Student t critical values t(0.975, df) for df = 1..30, then a few larger df (no scipy in deps).
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]
_T95_LARGE = [(40, 2.021), (60, 2.000), (120, 1.980)]
Z95 = 1.960

# (key in the result, where in a level summary) for the figures aggregated across repeats
METRICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("output_tok_s", ("output_tok_s",)),
    ("ttft_mean_ms", ("ttft_ms", "mean")),
    ("tpot_mean_ms", ("tpot_ms", "mean")),
    ("steady_output_tok_s", ("steady", "output_tok_s")),
    ("steady_ttft_mean_ms", ("steady", "ttft_ms", "mean")),
    ("steady_tpot_mean_ms", ("steady", "tpot_ms", "mean")),
)


def t95(df: int) -> float:
    """t(0.975, df); between the tabulated large df the next smaller df's (larger, so conservative) value."""
    if df < 1:
        raise ValueError("a t interval needs at least 2 values (df >= 1)")
    if df <= len(_T95):
        return _T95[df - 1]
    value = _T95[-1]
    for d, v in _T95_LARGE:
        if df >= d:
            value = v
    return value if df < 1000 else Z95


def mean_ci(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """{"n", "mean", "std", "half", "lo", "hi"} of the non-None values (module docstring); all None when empty."""
    x = [float(v) for v in values if v is not None]
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "half": None, "lo": None, "hi": None}
    mean = sum(x) / n
    if n == 1:
        return {"n": 1, "mean": mean, "std": None, "half": None, "lo": None, "hi": None}
    std = math.sqrt(sum((v - mean) ** 2 for v in x) / (n - 1))
    half = t95(n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "half": half, "lo": mean - half, "hi": mean + half}


def _dig(d: Any, path: Sequence[str]) -> Any:
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def aggregate(summaries: Iterable[dict]) -> list[dict[str, Any]]:
    """One row per (concurrency, request_rate), in first-seen order: {"concurrency", "request_rate", "repeats",
    <metric>: mean_ci, ...}. Takes level summaries (bench.metrics.summarize + "steady"), each with "status" (only
    "completed" ones count; a summary without a status counts)."""
    groups: dict[tuple, list[dict]] = {}
    for s in summaries:
        if s.get("status", "completed") != "completed":
            continue
        groups.setdefault((s.get("concurrency"), s.get("request_rate")), []).append(s)
    out = []
    for (conc, rate), rows in groups.items():
        row: dict[str, Any] = {"concurrency": conc, "request_rate": rate, "repeats": len(rows)}
        for key, path in METRICS:
            row[key] = mean_ci(_dig(s, path) for s in rows)
        out.append(row)
    return out


def summaries_of(levels: Iterable[Any]) -> list[dict]:
    """Level rows (storage.queries.LevelRow or anything with .summary/.status/.concurrency/.request_rate/.repeat)
    as the summaries aggregate() takes: the row's status, rate and repeat win over the summary's."""
    return [{**(lv.summary or {}), "concurrency": lv.concurrency, "request_rate": lv.request_rate,
             "repeat": getattr(lv, "repeat", 0) or 0, "status": getattr(lv.status, "value", lv.status)}
            for lv in levels]


def has_repeats(summaries: Iterable[dict]) -> bool:
    return any((s.get("repeat") or 0) > 0 for s in summaries)


def format_ci(ci: dict | None, nd: int = 1) -> str:
    """"1,234.5 ± 12.3" (95% CI half-width), "1,234.5" for a single value, "-" for none."""
    if not ci or ci.get("mean") is None:
        return "-"
    text = f"{ci['mean']:,.{nd}f}"
    return text if ci.get("half") is None else f"{text} ± {ci['half']:,.{nd}f}"


def interval_rows(summaries: Iterable[dict]) -> list[dict[str, Any]]:
    """aggregate() as display rows of strings (labelled whole-level vs steady), for tables in the CLI and pages."""
    rows = []
    for g in aggregate(summaries):
        rows.append({
            "concurrency": g["concurrency"],
            "rate req/s": "-" if g["request_rate"] is None else f"{g['request_rate']:g}",
            "repeats": g["repeats"],
            "out tok/s (whole)": format_ci(g["output_tok_s"]),
            "TTFT mean ms (whole)": format_ci(g["ttft_mean_ms"]),
            "TPOT mean ms (whole)": format_ci(g["tpot_mean_ms"], 2),
            "out tok/s (steady)": format_ci(g["steady_output_tok_s"]),
            "TTFT mean ms (steady)": format_ci(g["steady_ttft_mean_ms"]),
            "TPOT mean ms (steady)": format_ci(g["steady_tpot_mean_ms"], 2),
        })
    return rows


def interval_for(levels: Iterable[Any], concurrency: int, request_rate: float | None) -> dict[str, Any]:
    """interval_rows' row for one (concurrency, rate) of a run's level rows, without the key columns; {} if none.
    A rate that is NaN (a pandas cell) means closed loop."""
    if request_rate is not None and request_rate != request_rate:
        request_rate = None
    for g, row in zip(aggregate(summaries_of(levels)), interval_rows(summaries_of(levels))):
        if g["concurrency"] == concurrency and g["request_rate"] == request_rate:
            return {k: v for k, v in row.items() if k not in ("concurrency", "rate req/s")}
    return {}
