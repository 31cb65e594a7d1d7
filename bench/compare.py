"""Telling runs apart at a glance: labels built from what differs between the runs shown, and a one-line verdict.

Pure functions over plain values (anything with the attributes of `storage.queries.RunRow` works), no I/O, no UI.

Labels are GPU first ("H200 · vLLM · Qwen3-0.6B"): among the runs shown, a part (GPU, engine, model, precision:
quantization / dtype / KV dtype, prompt format) is kept only where the runs differ, the GPU always. One run alone gets every part. Runs that would still
share a label get their name, then their id. A simulated run always ends in "(SIMULATED)".

The verdict compares the fastest run with the runner-up: "H200: +14% peak tok/s, +10% $ per 1M tokens vs H100".

A deployment's non-LLM services (summary["services"], bench/service_load.py) are compared apart from the LLM figures:
`service_side_by_side` puts each run's figures for one level and service next to the other runs' (levels matched by
concurrency, request rate and repeat; services by name), `service_totals` sums them per run and service, so two
mixes show at a glance whether their translate / TTS / ASR services kept up. Runs without services add no row.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ENGINE_NAMES = {"vllm": "vLLM", "sglang": "SGLang", "trtllm": "TensorRT-LLM", "llamacpp": "llama.cpp", "sim": "sim",
                "openai": "OpenAI API",
                "custom": "custom"}
SIM_MARK = "(SIMULATED)"
SEP = " · "
# "H100-SXM-80GB" -> "H100-SXM", "H200-141GB" -> "H200": the memory size rarely tells two runs apart, the card does.
_MEM_SUFFIX = re.compile(r"[-_ ]?\d+\s*GB$", re.IGNORECASE)


def short_gpu(gpu: str | None, count: int | None = 1) -> str:
    name = _MEM_SUFFIX.sub("", (gpu or "").strip()) or (gpu or "").strip() or "GPU ?"
    return f"{int(count)}× {name}" if count and int(count) > 1 else name


def short_model(model: str | None) -> str:
    """'Qwen/Qwen3-0.6B' -> 'Qwen3-0.6B' (the organisation is rarely what tells runs apart)."""
    return (model or "?").rstrip("/").rsplit("/", 1)[-1] or (model or "?")


def engine_name(kind: str | None) -> str:
    return ENGINE_NAMES.get(kind or "", kind or "?")


def prompt_format(config: Mapping | None) -> str | None:
    """The workload's prompt format ("text" or "token-ids") from a stored run config; None without a workload.
    A workload from before the field existed sent token ids, or text on the chat endpoint (migration 0004 labels
    stored runs the same way; this covers configs that come from elsewhere, e.g. an old bundle)."""
    wl = (config or {}).get("workload") if isinstance(config, Mapping) else None
    if not isinstance(wl, Mapping):
        return None
    return wl.get("prompt_format") or ("text" if wl.get("endpoint") == "chat" else "token-ids")


def precision(config: Mapping | None) -> str | None:
    """'fp8' / 'bf16 · KV fp8' from a stored config's engine part: the settings that most often tell two runs of one
    engine apart (vLLM bf16 against vLLM fp8). None where the engine runs its defaults."""
    eng = (config or {}).get("engine") if isinstance(config, Mapping) else None
    if not isinstance(eng, Mapping):
        return None
    parts = [str(eng[k]) for k in ("quantization", "dtype") if eng.get(k)]
    if eng.get("kv_cache_dtype"):
        parts.append(f"KV {eng['kv_cache_dtype']}")
    return SEP.join(parts) or None


def _parts(run: Any, config: Mapping | None) -> dict[str, str | None]:
    return {"gpu": short_gpu(getattr(run, "gpu", None), getattr(run, "gpu_count", 1)),
            "engine": engine_name(getattr(run, "engine_kind", None)),
            "model": short_model(getattr(run, "model", None)),
            "precision": precision(config),
            # token-id prompts are labelled (they make a frontend-bound server look faster); text is the default
            "prompt": "token-id prompts" if prompt_format(config) == "token-ids" else None}


def run_labels(runs: Sequence[Any], configs: Mapping[int, Mapping] | None = None) -> dict[int, str]:
    """{run id: label} for the runs shown together (see the module docstring); `configs` ({id: stored config})
    adds the prompt format where known. Not escaped: escape where the label is rendered as markup."""
    parts = [_parts(r, (configs or {}).get(r.id) or getattr(r, "config", None)) for r in runs]
    keys = ["gpu"] + [k for k in ("engine", "model", "precision", "prompt")
                      if len(runs) == 1 or len({p[k] for p in parts}) > 1]
    base = {r.id: SEP.join(p[k] for k in keys if p[k]) for r, p in zip(runs, parts)}

    def clashing(lbl: dict[int, str]) -> set[int]:
        seen: dict[str, list[int]] = {}
        for rid, text in lbl.items():
            seen.setdefault(text, []).append(rid)
        return {rid for ids in seen.values() if len(ids) > 1 for rid in ids}

    by_id = {r.id: r for r in runs}
    for rid in clashing(base):  # same GPU, engine and model: the name tells them apart, if it is set
        name = (getattr(by_id[rid], "name", "") or "").strip()
        if name:
            base[rid] = f"{base[rid]}{SEP}{name}"
    for rid in clashing(base):
        base[rid] = f"{base[rid]}{SEP}#{rid}"
    from storage.queries import projection_label

    for rid in base:   # a projection (bench/project.py) says which measured run it came from
        if (what := projection_label(getattr(by_id[rid], "projection", None))) is not None:
            base[rid] = f"{base[rid]}{SEP}{what}"
    return {rid: text + (f" {SIM_MARK}" if getattr(by_id[rid], "simulated", False) else "")
            for rid, text in base.items()}


def picker_labels(runs: Sequence[Any], *, live_mark: bool = False) -> dict[int, str]:
    """{id: '#12 · H200 · vLLM · Qwen3-0.6B · my name (SIMULATED)'} for run pickers: the id and the name are what
    people search a long list by. `live_mark` adds "● live" to active runs."""
    labels = run_labels(runs)
    out = {}
    for r in runs:
        text = labels[r.id]
        sim = text.endswith(SIM_MARK)
        core = text[: -len(SIM_MARK)].rstrip() if sim else text
        name = (getattr(r, "name", "") or "").strip()
        if name and not core.endswith(name):
            core = f"{core}{SEP}{name}"
        if core.endswith(f"#{r.id}"):
            core = core[: -len(f"{SEP}#{r.id}")]
        out[r.id] = f"#{r.id}{SEP}{core}" + (f" {SIM_MARK}" if sim else "") + \
            ("  ● live" if live_mark and getattr(r, "active", False) else "")
    return out


@dataclass(frozen=True)
class RunFigures:
    """What the verdict needs of one run: its label, best measured output tok/s and $ per 1M output tokens there."""

    label: str
    peak_tok_s: float | None
    usd_per_m: float | None = None


def _pct_change(new: float, old: float) -> str:
    d = (new / old - 1) * 100
    return f"{d:+.0f}%" if abs(d) >= 0.5 else "±0%"


def verdict(figures: Sequence[RunFigures]) -> str | None:
    """'H200: +14% peak tok/s, +10% $ per 1M tokens vs H100' — the fastest run against the runner-up (when the
    cheapest per token is a third run, that is said too). None when fewer than two runs have a peak."""
    have = [f for f in figures if f.peak_tok_s]
    if len(have) < 2:
        return None
    ranked = sorted(have, key=lambda f: -float(f.peak_tok_s))
    lead, other = ranked[0], ranked[1]
    parts = [f"{_pct_change(lead.peak_tok_s, other.peak_tok_s)} peak tok/s"]
    if lead.usd_per_m and other.usd_per_m:
        parts.append(f"{_pct_change(lead.usd_per_m, other.usd_per_m)} $ per 1M tokens")
    text = f"{lead.label}: {', '.join(parts)} vs {other.label}"
    priced = [f for f in have if f.usd_per_m]
    if len(priced) > 2:
        cheapest = min(priced, key=lambda f: f.usd_per_m)
        if cheapest not in (lead, other):
            text += f"; cheapest per token: {cheapest.label} (${cheapest.usd_per_m:,.3f} per 1M)"
    return text


def with_cost(level_rows: Sequence[Mapping], gpu_count: int, price_per_gpu_hour: float | None) -> list[dict]:
    """Level rows (storage.queries.level_table) with "usd_per_m_output": $ per 1M output tokens at the level's
    output tok/s on `gpu_count` GPUs at `price_per_gpu_hour` (None where either is unknown)."""
    from bench.cost import usd_per_million_tokens

    out = []
    for row in level_rows:
        usd = (usd_per_million_tokens(row.get("output_tok_s"), max(1, int(gpu_count or 1)), price_per_gpu_hour)
               if price_per_gpu_hour is not None else None)
        out.append({**row, "usd_per_m_output": usd})
    return out


def figures(label: str, level_rows: Sequence[Mapping]) -> RunFigures:
    """The verdict's numbers of one run from its completed level rows (with_cost): the level of highest output
    tok/s, and $ per 1M output tokens there (for a fixed price per GPU-hour that is also the cheapest level)."""
    done = [r for r in level_rows if r.get("status") == "completed" and r.get("output_tok_s")]
    if not done:
        return RunFigures(label, None, None)
    best = max(done, key=lambda r: float(r["output_tok_s"]))
    return RunFigures(label, float(best["output_tok_s"]), best.get("usd_per_m_output"))


def partner_for(runs: Sequence[Any], run_id: int) -> int | None:
    """A run to compare `run_id` with when only it was asked for ("Compare with others" on Live): the newest other
    finished run of the same model, else the newest other finished run. `runs` newest first."""
    me = next((r for r in runs if r.id == run_id), None)
    others = [r for r in runs if r.id != run_id and not getattr(r, "active", False)]
    if me is None or not others:
        return None
    same = [r for r in others if getattr(r, "model", None) == getattr(me, "model", None)]
    return (same or others)[0].id


def cost_line(best: Mapping[str, Any]) -> str | None:
    """'Cheapest per token meeting the SLOs: H100 at C=64, $0.412 per 1M (H200 +10%)' from {label: the run's
    bench.cost.LevelCost (cheapest level meeting the SLOs) or None}. None when no run has such a level."""
    have = {lab: c for lab, c in best.items() if c is not None and c.usd_per_m_output}
    if not have:
        return None
    lab, c = min(have.items(), key=lambda kv: kv[1].usd_per_m_output)
    text = f"Cheapest per token meeting the SLOs: {lab} at C={c.concurrency:,}, ${c.usd_per_m_output:,.3f} per 1M"
    others = [f"{o} {_pct_change(oc.usd_per_m_output, c.usd_per_m_output)}" for o, oc in have.items() if o != lab]
    missing = [o for o, oc in best.items() if o not in have]
    if others:
        text += f" ({', '.join(others)})"
    if missing:
        text += f"; no level meets them: {', '.join(missing)}"
    return text


# ------------------------------------------------------------------------------------------------- services
# (label, level summaries, stored config or None) of one run, in the order the runs are shown
ServiceRun = tuple[str, Sequence[Mapping], Mapping | None]


def _ok_pct(ok: int | None, sent: int | None) -> float | None:
    return 100.0 * (ok or 0) / sent if sent else None


def service_side_by_side(runs: Sequence[ServiceRun]) -> list[dict]:
    """One row per level, service and run (bench.mix.service_rows + the run's label, the rate asked for and ok %),
    each (level, service) group holding the runs in the order given. Levels in order of concurrency, then rate
    (closed loop first), then repeat; services in order of first appearance. [] when no run has services."""
    from bench.mix import asked_rates, service_rows

    rows, order = [], {}
    for label, summaries, config in runs:
        asked = asked_rates(config)
        for r in service_rows(summaries):
            order.setdefault(r["service"], len(order))
            rows.append({"concurrency": r["concurrency"], "rate": r["rate"], "repeat": r["repeat"],
                         "service": r["service"], "run": label, "asked req/s": asked.get(r["service"]),
                         "sent": r["sent"], "ok": r["ok"], "err": r["err"], "ok %": _ok_pct(r["ok"], r["sent"]),
                         "ok req/s": r["ok req/s"], "latency p50 ms": r["latency p50 ms"],
                         "latency p99 ms": r["latency p99 ms"], "top error": r["top error"]})
    # a stable sort: within one (level, service) the runs keep the order given
    rows.sort(key=lambda r: (r["concurrency"] or 0, r["rate"] is not None, r["rate"] or 0.0, r["repeat"],
                             order[r["service"]]))
    return rows


def service_totals(runs: Sequence[ServiceRun]) -> list[dict]:
    """Per run and service over all its levels given: levels, sent, ok, err, ok %, the lowest ok req/s of a level,
    the highest latency p99 of a level and the most frequent error (a failure of the load itself first). Every
    failed request is in err; nothing is averaged away."""
    from collections import Counter

    from bench.mix import asked_rates

    out = []
    for label, summaries, config in runs:
        asked = asked_rates(config)
        agg: dict[str, dict] = {}
        for s in summaries:
            for sv in (s or {}).get("services") or []:
                a = agg.setdefault(sv.get("name"), {"levels": 0, "sent": 0, "ok": 0, "err": 0, "rates": [],
                                                    "p99": [], "errors": Counter(), "fault": None})
                a["levels"] += 1
                for k in ("sent", "ok", "err"):
                    a[k] += int(sv.get(k) or 0)
                if sv.get("req_s") is not None:
                    a["rates"].append(float(sv["req_s"]))
                if (p99 := (sv.get("latency_ms") or {}).get("p99")) is not None:
                    a["p99"].append(float(p99))
                a["errors"].update({k: int(n) for k, n in (sv.get("errors") or {}).items()})
                a["fault"] = a["fault"] or sv.get("error")
        for name, a in agg.items():
            top = a["fault"] or (a["errors"].most_common(1)[0][0] if a["errors"] else "")
            out.append({"run": label, "service": name, "asked req/s": asked.get(name), "levels": a["levels"],
                        "sent": a["sent"], "ok": a["ok"], "err": a["err"], "ok %": _ok_pct(a["ok"], a["sent"]),
                        "lowest ok req/s": min(a["rates"], default=None),
                        "highest latency p99 ms": max(a["p99"], default=None), "top error": top})
    return out


def runs_without_services(runs: Sequence[ServiceRun]) -> list[str]:
    """Labels of the runs whose levels carry no service traffic (said beside the services' table)."""
    from bench.mix import has_services

    return [label for label, summaries, _ in runs if not has_services(summaries)]
