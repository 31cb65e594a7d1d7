"""The engine comparison report: runs of one model on one GPU type with different engines or settings, side by side in
the source documents' table: TTFT, E2E latency, tokens/s, $ per 1K tokens at the run's price, daily cost at 1M / 10M /
100M tokens, and a best-pick line. Simulated runs are labelled in every row and in the best pick.

Which level of each run: by default its peak (the completed level of highest output tok/s, where a fixed price per
GPU-hour is also cheapest per token); `at=C` takes every run's level at concurrency C (runs without one are listed as
left out). Tokens are OUTPUT tokens, as everywhere in Melt's cost figures (bench/cost.py). Daily cost is pro-rated
(the GPU-seconds the tokens take at that throughput, = $ per 1K x thousands of tokens) and, beside it, provisioned
(whole GPUs for 24 h, enough replicas for the average rate: bench.cost.daily_cost).

`build_report` is pure (rows in, report out); `load_report` reads the history and the GPU catalog for the CLI
(`python -m bench compare-engines`) and the Compare page. Markdown cells are escaped (user text: run names, settings).
"""
from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.compare import SIM_MARK, engine_name, run_labels, short_gpu, short_model
from bench.cost import daily_cost, money_digits, usd_per_million_tokens

DAILY_TOKENS = (1_000_000, 10_000_000, 100_000_000)


@dataclass(frozen=True)
class EngineRow:
    run_id: int
    label: str                     # what tells the run apart (bench.compare.run_labels), "(SIMULATED)" included
    engine: str
    settings: str                  # engine settings from the stored config: quantization, KV dtype, extra args
    simulated: bool
    concurrency: int
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    e2e_p50_ms: float | None
    e2e_p99_ms: float | None
    output_tok_s: float | None
    n_err: int
    gpu_count: int
    price_per_gpu_hour: float | None
    usd_per_1k_tokens: float | None
    daily_prorated: dict[int, float | None] = field(default_factory=dict)      # tokens/day -> $
    daily_provisioned: dict[int, float | None] = field(default_factory=dict)   # tokens/day -> $ (whole GPUs, 24 h)
    daily_gpus: dict[int, int | None] = field(default_factory=dict)            # tokens/day -> GPUs provisioned


@dataclass(frozen=True)
class EngineReport:
    model: str
    gpu: str
    rows: list[EngineRow]
    best_pick: str | None
    warnings: list[str]
    at: int | None                 # None: each run's peak level


def engine_settings(config: Mapping | None) -> str:
    """'fp8 weights · KV fp8 · --enable-torch-compile' from a stored run config's engine part ('defaults' if none)."""
    eng = (config or {}).get("engine") or {}
    parts = []
    if eng.get("dtype"):
        parts.append(str(eng["dtype"]))
    if eng.get("quantization"):
        parts.append(f"{eng['quantization']} weights")
    if eng.get("kv_cache_dtype"):
        parts.append(f"KV {eng['kv_cache_dtype']}")
    if (eng.get("tp") or 1) > 1:
        parts.append(f"TP {eng['tp']}")
    if eng.get("dummy_weights"):
        parts.append("dummy weights")
    extra = [str(a) for a in eng.get("extra_args") or []]
    if extra:
        parts.append(" ".join(extra))
    return " · ".join(parts) or "defaults"


def _pick_level(rows: Sequence[Mapping], at: int | None) -> Mapping | None:
    done = [r for r in rows if r.get("status") == "completed" and r.get("output_tok_s")]
    if at is not None:
        done = [r for r in done if int(r.get("concurrency") or 0) == at]
    return max(done, key=lambda r: float(r["output_tok_s"])) if done else None


def _row(run: Any, config: Mapping, label: str, level: Mapping, price: float | None) -> EngineRow:
    gpus = max(1, int(getattr(run, "gpu_count", 1) or 1))
    tok = float(level["output_tok_s"])
    per_m = usd_per_million_tokens(tok, gpus, price) if price is not None else None
    pro, prov, ngpu = {}, {}, {}
    for n in DAILY_TOKENS:
        if price is None:
            pro[n] = prov[n] = ngpu[n] = None
            continue
        dc = daily_cost(n, tok, gpus, price)
        pro[n], prov[n], ngpu[n] = dc.usd_prorated, dc.usd_provisioned, dc.gpus
    return EngineRow(run_id=run.id, label=label, engine=engine_name(getattr(run, "engine_kind", None)),
                     settings=engine_settings(config), simulated=bool(getattr(run, "simulated", False)),
                     concurrency=int(level.get("concurrency") or 0), ttft_p50_ms=level.get("ttft_p50_ms"),
                     ttft_p99_ms=level.get("ttft_p99_ms"), e2e_p50_ms=level.get("e2e_p50_ms"),
                     e2e_p99_ms=level.get("e2e_p99_ms"), output_tok_s=tok, n_err=int(level.get("n_err") or 0),
                     gpu_count=gpus, price_per_gpu_hour=price,
                     usd_per_1k_tokens=per_m / 1000 if per_m is not None else None,
                     daily_prorated=pro, daily_provisioned=prov, daily_gpus=ngpu)


def _usd(v: float) -> str:
    return f"${money_digits(v)}"


def short_steady(level: Mapping) -> str | None:
    """Why a level's whole-level figures are not steady-state ones, or None: its steady window (bench/steady.py)
    covers under half of it, so ramp-up and drain weigh in (levels shorter than a few request lifetimes)."""
    dur, steady = level.get("duration_s"), level.get("steady_s")
    if not dur:
        return None
    if not steady:
        return f"no steady window in its {dur:.0f} s"
    if steady < 0.5 * dur:
        return f"a steady window of {steady:.1f} s in its {dur:.0f} s"
    return None


def best_pick(rows: Sequence[EngineRow]) -> str | None:
    """'Best pick: <label> — $0.0042 per 1K tokens, 31% below <runner-up>; fastest TTFT p50: <label> (120 ms)'.
    Cheapest per token first (with prices), else highest tok/s. A simulated pick says SIMULATED (its label does)."""
    if not rows:
        return None
    priced = [r for r in rows if r.usd_per_1k_tokens]
    if priced:
        ranked = sorted(priced, key=lambda r: (r.usd_per_1k_tokens, -(r.output_tok_s or 0)))
        lead = ranked[0]
        text = f"Best pick: {lead.label} — {_usd(lead.usd_per_1k_tokens)} per 1K output tokens"
        if len(ranked) > 1:
            nxt = ranked[1]
            pct = (1 - lead.usd_per_1k_tokens / nxt.usd_per_1k_tokens) * 100
            text += f", {pct:.0f}% below {nxt.label}" if pct >= 0.5 else f", level with {nxt.label}"
    else:
        lead = max(rows, key=lambda r: r.output_tok_s or 0)
        text = f"Best pick: {lead.label} — {lead.output_tok_s:,.0f} output tok/s (no prices: set one on the Cost page)"
    timed = [r for r in rows if r.ttft_p50_ms is not None]
    if len(timed) > 1:
        fast = min(timed, key=lambda r: r.ttft_p50_ms)
        if fast is not lead:
            text += f"; fastest TTFT p50: {fast.label} ({fast.ttft_p50_ms:,.0f} ms)"
    if lead.n_err:
        text += f" ({lead.n_err} failed request(s) at that level)"
    return text


def build_report(runs: Sequence[tuple[Any, Mapping, Sequence[Mapping]]], prices: Mapping[int, float | None],
                 at: int | None = None) -> EngineReport:
    """runs: (run row, stored config, level rows as storage.queries.level_table gives them) per run."""
    warnings: list[str] = []
    models = {short_model(getattr(r, "model", None)) for r, _, _ in runs}
    gpus = {short_gpu(getattr(r, "gpu", None)) for r, _, _ in runs}
    if len(models) > 1:
        warnings.append(f"these runs serve different models ({', '.join(sorted(models))}): an engine comparison "
                        "needs one model")
    if len(gpus) > 1:
        warnings.append(f"these runs ran on different GPUs ({', '.join(sorted(gpus))}): an engine comparison needs "
                        "one GPU type")
    counts = {int(getattr(r, "gpu_count", 1) or 1) for r, _, _ in runs}
    if len(counts) > 1:
        warnings.append("these runs use different GPU counts: tok/s is per replica, $ accounts for the GPUs")
    if any(getattr(r, "simulated", False) for r, _, _ in runs):
        warnings.append(f"includes SIMULATED runs {SIM_MARK}: Melt's simulator, not a real GPU")
    labels = run_labels([r for r, _, _ in runs], {r.id: c for r, c, _ in runs})
    rows, left_out, short = [], [], []
    for run, config, levels in runs:
        lvl = _pick_level(levels, at)
        if lvl is None:
            left_out.append(f"#{run.id}")
            continue
        rows.append(_row(run, config, labels[run.id], lvl, prices.get(run.id)))
        if why := short_steady(lvl):
            short.append(f"{labels[run.id]} at {int(lvl.get('concurrency') or 0)}: {why}")
    if short:
        warnings.append("not steady state (ramp-up and drain weigh in; longer levels, e.g. --duration 60 or the "
                        "default steady-state rule, measure it): " + "; ".join(short))
    if left_out:
        warnings.append(f"left out (no completed level{' at concurrency ' + str(at) if at else ''}): "
                        + ", ".join(left_out))
    if any(r.price_per_gpu_hour is None for r in rows):
        warnings.append("no price per GPU-hour for: " + ", ".join(f"#{r.run_id}" for r in rows
                                                                  if r.price_per_gpu_hour is None))
    return EngineReport(model=", ".join(sorted(models)), gpu=", ".join(sorted(gpus)), rows=rows,
                        best_pick=best_pick(rows), warnings=warnings, at=at)


# ---------------------------------------------------------------------------------------------------- output

def _tokens_name(n: int) -> str:
    return f"{n // 1_000_000}M"


def table_rows(report: EngineReport) -> list[dict[str, Any]]:
    """Flat rows (CSV columns, the page's table)."""
    out = []
    for r in report.rows:
        d: dict[str, Any] = {"run": r.run_id, "configuration": r.label, "engine": r.engine, "settings": r.settings,
                             "simulated": r.simulated, "concurrency": r.concurrency,
                             "ttft_p50_ms": r.ttft_p50_ms, "ttft_p99_ms": r.ttft_p99_ms, "e2e_p50_ms": r.e2e_p50_ms,
                             "e2e_p99_ms": r.e2e_p99_ms, "output_tok_s": r.output_tok_s, "failed": r.n_err,
                             "gpus": r.gpu_count, "usd_per_gpu_hour": r.price_per_gpu_hour,
                             "usd_per_1k_tokens": r.usd_per_1k_tokens}
        for n in DAILY_TOKENS:
            d[f"usd_per_day_{_tokens_name(n)}"] = r.daily_prorated.get(n)
        for n in DAILY_TOKENS:
            d[f"usd_per_day_{_tokens_name(n)}_provisioned"] = r.daily_provisioned.get(n)
        out.append(d)
    return out


def to_csv(report: EngineReport) -> str:
    rows = table_rows(report)
    buf = io.StringIO()
    if not rows:
        return ""
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for row in rows:
        # a cell starting with = + - @ is a formula to a spreadsheet: user text (labels, settings) is quoted safe
        w.writerow({k: ("'" + v if isinstance(v, str) and v[:1] in "=+-@" else v) for k, v in row.items()})
    return buf.getvalue()


def md_escape(text: str) -> str:
    """Markdown-table-safe text: pipes, backslashes, markup characters and HTML escaped, newlines flattened."""
    out = str(text).replace("\\", "\\\\")
    for ch in "|*_`[]<>#~":
        out = out.replace(ch, "\\" + ch)
    return " ".join(out.split())


def _num(v: float | None, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def to_markdown(report: EngineReport) -> str:
    head = ["Configuration", "Settings", "C", "TTFT p50 (ms)", "E2E p50 (ms)", "Output tok/s", "$ / 1K tokens",
            *[f"$/day @ {_tokens_name(n)}" for n in DAILY_TOKENS]]
    lines = [f"### Engine comparison: {md_escape(report.model)} on {md_escape(report.gpu)}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report.rows:
        cells = [md_escape(r.label), md_escape(r.settings), str(r.concurrency), _num(r.ttft_p50_ms, ",.0f"),
                 _num(r.e2e_p50_ms, ",.0f"), _num(r.output_tok_s, ",.0f"),
                 "–" if r.usd_per_1k_tokens is None else money_digits(r.usd_per_1k_tokens),
                 *[_num(r.daily_prorated.get(n), ",.2f") for n in DAILY_TOKENS]]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lvl = f"every run at concurrency {report.at}" if report.at else "each run at its peak-throughput level (C)"
    lines.append(f"Level: {lvl}. Tokens are output tokens; $ at each run's price per GPU-hour. $/day is pro-rated "
                 "(the GPU time those tokens take); whole GPUs for 24 h: " + _provisioned_all(report.rows) + ".")
    if report.best_pick:
        lines += ["", f"**{md_escape(report.best_pick)}**"]
    for w in report.warnings:
        lines += ["", f"> {md_escape(w)}"]
    return "\n".join(lines) + "\n"


def _provisioned_all(rows: Sequence[EngineRow]) -> str:
    texts = [_provisioned_text(r) for r in rows]
    if len(rows) > 1 and len(set(texts)) == 1:
        return f"every configuration {texts[0]}"
    return "; ".join(f"{md_escape(r.label)} {t}" for r, t in zip(rows, texts))


def _provisioned_text(r: EngineRow) -> str:
    if r.price_per_gpu_hour is None:
        return "no price"
    return ", ".join(f"{_tokens_name(n)}: {r.daily_gpus[n]} GPU(s) ${r.daily_provisioned[n]:,.0f}"
                     for n in DAILY_TOKENS)


def report_dict(report: EngineReport) -> dict:
    return asdict(report)


# ------------------------------------------------------------------------------------------------------- I/O

def load_report(run_ids: Sequence[int], db=None, at: int | None = None) -> tuple[EngineReport, list[int]]:
    """The report over stored runs (price: the run's own, else the GPU catalog's). Returns (report, missing ids)."""
    from catalog.loader import load_gpus
    from storage import queries as q

    details = q.get_runs(list(dict.fromkeys(run_ids)), db)
    found = {d.run.id for d in details}
    try:
        cat = dict(load_gpus())
    except Exception:  # noqa: BLE001 - a broken catalog only loses the default prices
        cat = {}
    prices = {d.run.id: d.run.price_per_gpu_hour if d.run.price_per_gpu_hour is not None
              else (cat[d.run.gpu].price_per_hour if d.run.gpu in cat else None) for d in details}
    report = build_report([(d.run, d.config, q.level_table(d)) for d in details], prices, at)
    return report, [i for i in run_ids if i not in found]
