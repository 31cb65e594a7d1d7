"""Blitz: one number that ranks a GPU for LLM serving in a few minutes, with its health.

A Blitz run is an ordinary run (same worker, same rows) whose levels are chosen as it goes (RunConfig.blitz):
1. Search: closed-loop levels at start_concurrency, 2x, 4x, ... each run by the steady-state rule with a short
   `search_steady_s`. Its score is the level's steady-state output tok/s (bench/steady.py; the whole-level figure
   when the level had no steady window). The search stops at the first level whose score is less than (1 + gain)
   times the previous level's (a doubling that adds under `gain`, 10% by default: throughput stopped rising), or
   when the next doubling would pass `max_concurrency`, or at a level the client could not drive (client-bound) or
   that had failed requests. The saturating concurrency is the lower of the last two levels: the knee, where one
   more doubling no longer pays. On the H200 (docs/PERFORMANCE.md, GPU Blitz) taking the better of the two chose 256
   users once (+2.9% over 128 in a 6 s search window) and 128 the next time; measured for minutes, 256 gave 17.3k
   tok/s, falling minute by minute on a frontend-bound server, against 25.0k at 128. The knee is what a user would
   deploy (same throughput, lower latency) and does not flip on a search window's noise.
2. Measure: `repeats` levels of `minutes` at that concurrency. The score is their steady-state output tok/s (the
   mean when repeated, with the spread (max - min) / mean as the agreement figure).

`blitz_result` turns the stored levels, the run's health verdict and versions into the result document: score,
tok/s per watt and J per output token (NVML energy of the measured levels, telemetry/), TTFT/TPOT there, roofline
share, health, versions; stored as the run's `blitz` event and shown by the CLI, the Blitz page and the Leaderboard.
Pure: no I/O here (bench/sweep.py runs the levels, storage holds the rows).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from statistics import mean
from typing import Any

from bench.config import BlitzSpec, PlannedLevel, WorkloadSpec

TAG = "blitz"
AGREEMENT = 0.03  # repeated measured levels whose (max - min) / mean is above this do not make a stable score


def level_workload(wl: WorkloadSpec, spec: BlitzSpec, phase: str | None) -> WorkloadSpec:
    """The workload of one Blitz level: search levels by the short steady-state rule, measured ones by duration."""
    if phase == "search":
        return wl.model_copy(update={"requests": None, "duration_s": None, "min_steady_s": spec.search_steady_s,
                                     "min_requests_per_user": spec.search_requests_per_user})
    if phase == "measure":
        return wl.model_copy(update={"requests": None, "duration_s": spec.minutes * 60.0})
    return wl


def level_score(summary: Mapping) -> tuple[float | None, bool]:
    """(output tok/s, steady?) of a level: the steady-state figure when the level has a window, else whole-level."""
    st = summary.get("steady") or {}
    if st.get("window") and st.get("output_tok_s") is not None:
        return float(st["output_tok_s"]), True
    v = summary.get("output_tok_s")
    return (float(v) if v is not None else None), False


def next_step(search: Sequence[Mapping], spec: BlitzSpec) -> dict:
    """What follows the search levels so far: {"action": "search"|"measure"|"fail", "concurrency", "reason"}.
    Each element: {"concurrency", "status", "tok_s", "client_bound", "n_err"} in the order they ran."""
    if not search:
        return {"action": "search", "concurrency": spec.start_concurrency, "reason": "first search level"}
    last = search[-1]
    usable = [p for p in search if p.get("status") == "completed" and p.get("tok_s")
              and not p.get("client_bound") and not p.get("n_err")]
    fault = (last.get("status") != "completed" and "failed" or last.get("client_bound") and "client-bound"
             or last.get("n_err") and f"{last['n_err']} failed request(s)" or not last.get("tok_s") and "no output")
    if fault:
        if not usable:
            return {"action": "fail", "concurrency": None,
                    "reason": f"the search level at concurrency {last['concurrency']} was {fault}, and no earlier "
                              f"level can be measured"}
        best = max(usable, key=lambda p: p["tok_s"])
        return {"action": "measure", "concurrency": best["concurrency"],
                "reason": f"search stopped: concurrency {last['concurrency']} was {fault}; measuring the best "
                          f"level before it"}
    if len(search) >= 2 and search[-2] in usable:
        prev = search[-2]
        gain = last["tok_s"] / prev["tok_s"] - 1.0
        if gain < spec.gain:
            return {"action": "measure", "concurrency": prev["concurrency"],
                    "reason": f"saturated: doubling {prev['concurrency']} -> {last['concurrency']} changed steady "
                              f"output tok/s by {gain:+.1%} (< {spec.gain:.0%}); measuring the knee, "
                              f"{prev['concurrency']}"}
    nxt = last["concurrency"] * 2
    if nxt > spec.max_concurrency:
        best = max(usable, key=lambda p: p["tok_s"])
        return {"action": "measure", "concurrency": best["concurrency"],
                "reason": f"max concurrency {spec.max_concurrency} reached before throughput stopped rising"}
    return {"action": "search", "concurrency": nxt, "reason": "throughput still rising"}


def search_point(concurrency: int, status: str, summary: Mapping) -> dict:
    tok_s, steady = level_score(summary)
    return {"concurrency": concurrency, "status": status, "tok_s": tok_s, "steady": steady,
            "client_bound": bool(summary.get("client_bound")), "n_err": int(summary.get("n_err") or 0)}


def plan_after(step: dict, spec: BlitzSpec) -> list[PlannedLevel]:
    """The levels a step adds to the run's plan."""
    if step["action"] == "search":
        return [PlannedLevel(concurrency=step["concurrency"], phase="search")]
    if step["action"] == "measure":
        # repeat 0 is the search level at that concurrency: measured ones are 1..repeats, so (C, repeat) stays unique
        return [PlannedLevel(concurrency=step["concurrency"], phase="measure", repeat=k + 1)
                for k in range(spec.repeats)]
    return []


def _pct(d: Mapping | None, key: str, stat: str) -> float | None:
    v = ((d or {}).get(key) or {}).get(stat)
    return float(v) if v is not None else None


def _mean_of(values: list) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return mean(vals) if vals else None


def blitz_result(levels: Sequence[Mapping], *, spec: Mapping | None = None, verdict: Mapping | None = None,
                 simulated: bool = False, gpu: str | None = None, gpu_count: int = 1, model: str | None = None,
                 versions: Mapping | None = None, gpu_facts: Mapping | None = None,
                 decision: Mapping | None = None, single_stream: Mapping | None = None,
                 setup: Mapping | None = None) -> dict:
    """The Blitz result of a run from its stored levels: each {"concurrency", "status", "summary", "telemetry"}
    (summary["blitz"]["phase"] says search or measure). `setup`: what makes two Blitz runs comparable (prompt and
    output lengths, minutes, engine arguments and version: bench.blitz_run.compute_result), kept in the result."""
    def phase(lv: Mapping) -> str | None:
        return ((lv.get("summary") or {}).get("blitz") or {}).get("phase")

    search = [search_point(lv["concurrency"], lv.get("status") or "", lv.get("summary") or {})
              for lv in levels if phase(lv) == "search"]
    measured = [lv for lv in levels if phase(lv) == "measure" and lv.get("status") == "completed"]
    scores = [level_score(lv.get("summary") or {}) for lv in measured]
    vals = [s for s, _ in scores if s is not None]
    score = mean(vals) if vals else None
    spread = (max(vals) - min(vals)) / score if len(vals) >= 2 and score else None
    tele = [lv.get("telemetry") or {} for lv in measured]
    power = _mean_of([t.get("avg_power_w") for t in tele])
    summaries = [lv.get("summary") or {} for lv in measured]
    steadies = [s.get("steady") if (s.get("steady") or {}).get("window") else s for s in summaries]
    roof = [(s.get("roofline") or {}).get("share") for s in summaries]
    cpu = [(s.get("server_cpu") or {}) for s in summaries if (s.get("server_cpu") or {}).get("busiest")]
    status = "completed" if score is not None else "failed"
    return {
        "kind": TAG, "status": status, "simulated": bool(simulated),
        "gpu": gpu, "gpu_count": gpu_count, "model": model,
        "score_output_tok_s": score,
        "score_is_steady": all(st for _, st in scores) if scores else None,
        "score_per_gpu": score / max(gpu_count, 1) if score is not None else None,
        "concurrency": measured[0]["concurrency"] if measured else None,
        "measured_levels": len(measured), "measured_scores": vals, "spread": spread,
        "stable": None if spread is None else spread <= AGREEMENT,
        "minutes": (spec or {}).get("minutes"),
        "setup": dict(setup) if setup is not None else None,
        "tok_s_per_w": score / power if score is not None and power else None,
        "avg_power_w": power,
        "j_per_output_token": _mean_of([t.get("joules_per_output_token") for t in tele]),
        "ttft_p50_ms": _mean_of([_pct(s, "ttft_ms", "p50") for s in steadies]),
        "ttft_p99_ms": _mean_of([_pct(s, "ttft_ms", "p99") for s in steadies]),
        "tpot_p50_ms": _mean_of([_pct(s, "tpot_ms", "p50") for s in steadies]),
        "tpot_p99_ms": _mean_of([_pct(s, "tpot_ms", "p99") for s in steadies]),
        "roofline_share": _mean_of(roof),
        "roofline_bound": next(((s.get("roofline") or {}).get("bound") for s in summaries if s.get("roofline")), None),
        # the engine's busiest process at the measured point (bench/server_cpu.py): a frontend-bound score ranks the
        # host's CPU as much as the GPU, so the result says so
        "server_cpu_pct": _mean_of([c["busiest"].get("pct") for c in cpu]),
        "server_cpu_proc": cpu[0]["busiest"].get("name") if cpu else None,
        "frontend_bound": any(c.get("frontend_bound") for c in cpu) if cpu else None,
        "peak_temp_gpu_c": max((t["peak_temp_gpu_c"] for t in tele if t.get("peak_temp_gpu_c") is not None),
                               default=None),
        "throttled_pct": _mean_of([t.get("throttled_pct") for t in tele]),
        "health": {"status": (verdict or {}).get("status"), "reasons": list((verdict or {}).get("reasons") or [])},
        "search": search, "decision": dict(decision or {}),
        "versions": dict(versions or {}), "gpu_facts": _facts_brief(gpu_facts),
        "single_stream": dict(single_stream) if single_stream else None,
    }


def _facts_brief(facts: Mapping | None) -> list[dict]:
    """Name, driver, VBIOS, clocks and power limit of each GPU from the gpu_facts event (whatever it has)."""
    out = []
    for key, f in (facts or {}).items():
        if not isinstance(f, Mapping):
            continue
        keep = {k: f.get(k) for k in ("name", "uuid", "driver", "cuda", "vbios", "architecture",
                                      "max_sm_clock_mhz", "max_mem_clock_mhz", "power_limit_w",
                                      "power_limit_default_w", "pcie_link_gen", "pcie_link_width") if f.get(k) is not None}
        out.append({"gpu": key, **keep})
    return out


def against_previous(entry: Mapping, entries: Sequence[Mapping]) -> dict | None:
    """This Blitz against the newest one started before it (by created_at) of the same GPU kind and count, engine,
    model, kind (measured or simulated) and setup (lengths, minutes, engine arguments and version: the result's
    `setup`): the run-to-run check of two Blitz runs agreeing within AGREEMENT. entry / entries: rows of
    storage.queries.blitz_results. None when there is no earlier comparable run with a score. The host is not part
    of the key: a run imported from another machine of the same GPU kind counts (the page says "GPU kind")."""
    res = entry.get("result") or {}
    score = res.get("score_output_tok_s")
    if not score:
        return None

    def key(e: Mapping) -> tuple:
        r = e.get("result") or {}
        setup = r.get("setup")
        return (e.get("gpu"), e.get("gpu_count"), e.get("engine_kind"), r.get("model"), bool(e.get("simulated")),
                json.dumps(setup, sort_keys=True, default=str) if setup is not None else None)

    def when(e: Mapping) -> tuple:
        return (str(e.get("created_at") or ""), e.get("run_id") or 0)

    earlier = [e for e in entries if e.get("run_id") != entry.get("run_id") and when(e) < when(entry)
               and key(e) == key(entry) and (e.get("result") or {}).get("score_output_tok_s")]
    if not earlier:
        return None
    prev = max(earlier, key=when)
    other = float(prev["result"]["score_output_tok_s"])
    spread = abs(float(score) - other) / ((float(score) + other) / 2)
    return {"run_id": prev["run_id"], "score_output_tok_s": other, "change": float(score) / other - 1,
            "spread": spread, "agree": spread <= AGREEMENT}


def headline(result: Mapping) -> str:
    """One line: 'Blitz score 12,345 output tok/s at concurrency 256 · 21.3 tok/s/W · 0.047 J/token · health PASS'."""
    from bench.tables import fmt_rate, fmt_small

    if result.get("score_output_tok_s") is None:
        return "Blitz: no score (" + str((result.get("decision") or {}).get("reason") or "no measured level") + ")"
    sim = " [SIMULATED]" if result.get("simulated") else ""
    parts = [f"Blitz score{sim} {fmt_rate(result['score_output_tok_s'])} output tok/s at concurrency "
             f"{result.get('concurrency')}"]
    if result.get("spread") is not None:
        n, spread = result["measured_levels"], result["spread"]
        parts.append(f"{n} runs agree within {spread:.1%}" if spread <= AGREEMENT
                     else f"{n} runs DISAGREE by {spread:.1%} (> {AGREEMENT:.0%}): not a stable score")
    if result.get("tok_s_per_w") is not None:
        parts.append(f"{fmt_rate(result['tok_s_per_w'])} tok/s per W")
    if result.get("j_per_output_token") is not None:
        parts.append(f"{fmt_small(result['j_per_output_token'])} J/token")
    if result.get("roofline_share") is not None:
        parts.append(f"{100 * result['roofline_share']:.1f}% of roofline")
    parts.append(f"health {(result.get('health') or {}).get('status') or 'unknown'}")
    if result.get("frontend_bound"):
        parts.append(f"FRONTEND-BOUND (engine {result.get('server_cpu_proc') or 'process'} at "
                     f"{result.get('server_cpu_pct') or 0:.0f}% of a core: the host CPU limits this score)")
    ss = result.get("single_stream") or {}
    if ss.get("output_tok_s") is not None:
        parts.append(f"single-stream HF generate {fmt_rate(ss['output_tok_s'])} tok/s")
    return " · ".join(parts)


def result_rows(result: Mapping) -> list[tuple[str, Any]]:
    """(label, value) pairs for tables (CLI, Blitz page)."""
    from bench.tables import fmt_ms, fmt_rate, fmt_small

    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}%"

    ss = result.get("single_stream") or {}
    rows = [("score: steady output tok/s", fmt_rate(result.get("score_output_tok_s"))),
            ("per GPU", fmt_rate(result.get("score_per_gpu"))),
            ("saturating concurrency", str(result.get("concurrency") or "–")),
            ("measured levels", str(result.get("measured_levels") or 0)),
            ("agreement (max-min)/mean", pct(result.get("spread"))),
            ("tok/s per W", fmt_rate(result.get("tok_s_per_w"))),
            ("J / output token", fmt_small(result.get("j_per_output_token"))),
            ("avg power W", fmt_rate(result.get("avg_power_w"))),
            ("TTFT p50 / p99 ms", f"{fmt_ms(result.get('ttft_p50_ms'))} / {fmt_ms(result.get('ttft_p99_ms'))}"),
            ("TPOT p50 / p99 ms", f"{fmt_ms(result.get('tpot_p50_ms'))} / {fmt_ms(result.get('tpot_p99_ms'))}"),
            ("roofline share", pct(result.get("roofline_share"))
             + (f" ({result['roofline_bound']}-bound)" if result.get("roofline_bound") else "")),
            ("peak GPU temp °C", fmt_rate(result.get("peak_temp_gpu_c"))),
            ("throttled %", fmt_rate(result.get("throttled_pct"))),
            ("health", (result.get("health") or {}).get("status") or "unknown")]
    if result.get("server_cpu_pct") is not None:
        rows.append(("server CPU (busiest engine process)",
                     f"{result['server_cpu_pct']:.0f}% {result.get('server_cpu_proc') or ''}".rstrip()
                     + (" frontend-bound" if result.get("frontend_bound") else "")))
    if ss:
        rows.append(("single-stream (HF generate, batch 1) tok/s", fmt_rate(ss.get("output_tok_s"))))
    return rows


_HEALTH_ORDER = {"FAIL": 3, "WARN": 2, "PASS": 1}


def leaderboard(entries: Sequence[Mapping]) -> dict[str, list[dict]]:
    """Blitz scores per GPU model (storage.queries.blitz_results rows): {"real": [...], "simulated": [...]}, each
    row {"gpu", "best", "median", "count", "best_run_id", "health", "health_counts", "engines", "drivers",
    "per_gpu_best"} ranked by best score. Simulated entries are never mixed with real ones. Only scored runs count;
    a GPU's count is its scored runs, its health the worst verdict among them (with how many of each)."""
    from statistics import median

    groups: dict[tuple[bool, str, int], list[Mapping]] = {}
    for e in entries:
        r = e.get("result") or {}
        if r.get("score_output_tok_s") is None:
            continue
        key = (bool(e.get("simulated") or r.get("simulated")), str(e.get("gpu") or r.get("gpu") or "unknown GPU"),
               int(e.get("gpu_count") or r.get("gpu_count") or 1))
        groups.setdefault(key, []).append(e)
    out: dict[str, list[dict]] = {"real": [], "simulated": []}
    for (sim, gpu, count), es in groups.items():
        scores = [float(e["result"]["score_output_tok_s"]) for e in es]
        best = max(es, key=lambda e: e["result"]["score_output_tok_s"])
        health = [str((e["result"].get("health") or {}).get("status") or "unknown") for e in es]
        counts = {h: health.count(h) for h in sorted(set(health), key=lambda h: -_HEALTH_ORDER.get(h, 0))}
        versions = [e["result"].get("versions") or {} for e in es]
        drivers = sorted({str(f.get("driver")) for e in es for f in e["result"].get("gpu_facts") or []
                          if f.get("driver")})
        out["simulated" if sim else "real"].append({
            "gpu": gpu + (f" x{count}" if count > 1 else ""), "simulated": sim, "best": max(scores),
            "median": median(scores), "count": len(scores), "best_run_id": best["run_id"],
            "per_gpu_best": max(scores) / count,
            "health": max(health, key=lambda h: _HEALTH_ORDER.get(h, 0)), "health_counts": counts,
            "engines": sorted({f"{e.get('engine_kind')} {v.get('engine') or ''}".strip() for e, v in zip(es, versions)}),
            "drivers": drivers,
            "best_tok_s_per_w": best["result"].get("tok_s_per_w"),
            "best_roofline_share": best["result"].get("roofline_share"),
        })
    for rows in out.values():
        rows.sort(key=lambda r: -r["best"])
        for i, r in enumerate(rows):
            r["rank"] = i + 1
    return out
