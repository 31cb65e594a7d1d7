"""Plain-text tables and the JSON run document (CLI `sweep --json` and `show --json` print the same shape).

The level table shows whole-level figures (vllm bench definitions) and, labelled "steady", the steady-state ones
(bench/steady.py); with --repeat, `repeats_table` adds mean ± 95% CI per (concurrency, rate) (bench/repeats.py)."""
from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import select

from storage.db import open_db
from storage.models import EngineInstance, Event, Level, Run
from storage.queries import projection_label


def _f(v, nd: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def prompt_label(config: dict | None) -> str:
    """What a run's prompts were, in a few words ("text", "token ids", "text + 256-token shared prefix", ...), and
    " · connections at go" for a run that opened its connections inside the measured time (--connect-at-go).
    Token-id runs cost the server's frontend less, so every place that shows numbers shows this beside them."""
    from bench.compare import prompt_format

    wl = (config or {}).get("workload") or {}
    out = "text" if prompt_format(config) == "text" else "token ids"
    if wl.get("prompt_file"):
        out += " from a prompt file"
    if wl.get("prefix_len"):
        out += f" + {wl['prefix_len']}-token shared prefix"
    if wl.get("preconnect") is False:  # connects inside the measured time, as vllm bench: TTFT includes them
        out += " · connections at go"
    return out


def _pct(summary: dict, key: str, stat: str):
    return (summary.get(key) or {}).get(stat)


LEVEL_COLUMNS = ["conc", "rate", "rep", "sent", "ok", "err", "dur s", "out tok/s", "req/s", "TTFT p50", "TTFT p99",
                 "TPOT p50", "ITL p50", "E2E p50", "goodput", "steady s", "steady tok/s", "steady TTFT p50",
                 "steady TPOT p50", "roofline %", "client CPU", "server CPU", "status"]


def level_row(s: dict) -> list[str]:
    cpu = s.get("client_cpu_pct")
    flag = " (client-bound!)" if s.get("client_bound") else ""
    st = s.get("steady") or {}
    rate = s.get("request_rate")
    return [_f(s.get("concurrency")), "-" if rate is None else f"{rate:g}", _f((s.get("repeat") or 0) + 1),
            _f(s.get("n_sent")), _f(s.get("n_ok")), _f(s.get("n_err")),
            _f(s.get("duration_s")), _f(s.get("output_tok_s")), _f(s.get("req_s"), 2),
            _f(_pct(s, "ttft_ms", "p50")), _f(_pct(s, "ttft_ms", "p99")), _f(_pct(s, "tpot_ms", "p50"), 2),
            _f(_pct(s, "itl_ms", "p50"), 2), _f(_pct(s, "e2e_ms", "p50")), _f(s.get("goodput_req_s"), 2),
            _f(st.get("duration_s")), _f(st.get("output_tok_s")), _f(_pct(st, "ttft_ms", "p50")),
            _f(_pct(st, "tpot_ms", "p50"), 2), _roof(s),
            (f"{cpu:.0f}%" if cpu is not None else "-") + flag, _server(s), s.get("status", "")]


def _server(s: dict) -> str:
    """The engine's busiest process, % of one core (bench/server_cpu.py); '-' for a server Melt did not launch."""
    b = (s.get("server_cpu") or {}).get("busiest")
    if not b:
        return "-"
    return f"{b['pct']:.0f}%" + (" (frontend-bound!)" if s["server_cpu"].get("frontend_bound") else "")


def _roof(s: dict) -> str:
    """The level's share of the GPU's roofline (bench/roofline.py), e.g. '23.4%'."""
    from storage.queries import roofline_share

    share = roofline_share(s)
    return "-" if share is None else f"{100 * share:.1f}%"


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """Text for a terminal: control characters (ESC sequences could move the cursor or write the clipboard) shown
    as '?'. Run names, errors and server replies are other people's text. --json output is escaped anyway."""
    return _CONTROL.sub("?", text)


def table(header: list[str], rows: list[list[str]]) -> str:
    rows = [[terminal_safe(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def levels_table(summaries: list[dict]) -> str:
    return table(LEVEL_COLUMNS, [level_row(s) for s in summaries])


def instances_table(summaries: list[dict], gpu_count: int = 1, price_per_gpu_hour: float | None = None) -> str:
    """Per instance and whole box, per level, of a deployment of several instances ("" for a single engine)."""
    from bench.mix import breakdown, readable

    rows = readable(breakdown(summaries, gpu_count, price_per_gpu_hour))
    if not rows:
        return ""
    header = [k for k in rows[0] if k != "repeat" or any(r["repeat"] != "1" for r in rows)]
    return table(header, [[r[k] for k in header] for r in rows])


def services_table(summaries: list[dict], gpu_count: int = 1, price_per_gpu_hour: float | None = None) -> str:
    """The non-LLM services' own traffic per level (bench.mix.service_rows), with the whole box's $ per 1,000 ok
    requests when a price is set, and what that figure means ("" when no level has services)."""
    from bench.mix import SERVICE_COST_NOTE, readable, service_rows

    rows = readable(service_rows(summaries, gpu_count, price_per_gpu_hour))
    if not rows:
        return ""
    header = [k for k in rows[0] if k != "repeat" or any(r["repeat"] != "1" for r in rows)]
    note = SERVICE_COST_NOTE if price_per_gpu_hour is not None else "no price per GPU-hour: no $ per request"
    return table(header, [[r[k] for k in header] for r in rows]) + "\n" + note


def repeats_table(summaries: list[dict]) -> str:
    """Mean ± 95% CI across repeats per (concurrency, rate), whole-level and steady; "" when nothing repeats."""
    from bench.repeats import has_repeats, interval_rows

    if not has_repeats(summaries):
        return ""
    rows = interval_rows(summaries)
    if not rows:
        return ""
    header = list(rows[0])
    return ("mean ± 95% confidence interval across repeats (Student t)\n"
            + table(header, [[str(r[h]) for h in header] for r in rows]))


def sim_error_lines(doc: dict) -> list[str]:
    """A simulated run's expected error against measured runs of that shape, one line per group of its levels
    (from a run document, or any dict with simulated, model, gpu, levels and config); [] for a measured run."""
    if not doc.get("simulated"):
        return []
    return sim_run_notes([lv.get("concurrency") for lv in doc.get("levels") or []], doc.get("model"), doc.get("gpu"),
                         doc.get("config"), doc.get("projection"))


def sim_run_notes(levels, model: str | None, gpu: str | None, config, projection: dict | None = None) -> list[str]:
    """engines.sim.accuracy.run_notes for a simulated run: its measured levels, else its config's planned ones, and
    its config's workload shape (a RunConfig or its dict). A projected run (bench/project.py) carries its own lines:
    the fit's residual on the run it came from and the projection check, not the plain sim's bands."""
    from engines.sim.accuracy import run_notes, shape_of

    if projection:
        return [str(x) for x in projection.get("expected") or []] or [
            f"{projection_label(projection, loud=True)} (simulated): expected error unknown"]
    config = config or {}
    planned = config.get("levels") if isinstance(config, dict) else getattr(config, "levels", None)
    return run_notes(list(levels or []) or list(planned or []), model, gpu, shape=shape_of(config))


def run_document(run_id: int, db: str | Path | None = None) -> dict:
    factory = open_db(db)
    with factory() as s:
        run = s.get(Run, run_id)
        if run is None:
            raise LookupError(f"run {run_id} not found")
        levels = s.scalars(select(Level).where(Level.run_id == run_id).order_by(Level.idx)).all()
        insts = s.scalars(select(EngineInstance).where(EngineInstance.run_id == run_id)).all()
        verdicts = s.scalars(select(Event).where(Event.run_id == run_id, Event.kind == "verdict")).all()
        blitz = s.scalars(select(Event).where(Event.run_id == run_id, Event.kind == "blitz")
                          .order_by(Event.id.desc()).limit(1)).first()
        searches = s.scalars(select(Event).where(Event.run_id == run_id, Event.kind == "slo_search")).all()
        level_docs = []
        for lv in levels:
            doc = dict(lv.summary or {})
            # A level stopped before its summary was written (hard interrupt) still shows its row's counts.
            for key in ("concurrency", "n_sent", "n_ok", "n_err"):
                doc.setdefault(key, getattr(lv, key))
            doc["status"] = lv.status.value
            doc.setdefault("repeat", lv.repeat)
            if lv.error:
                doc["error"] = lv.error
            level_docs.append(doc)
        return {
            "run_id": run.id, "name": run.name, "status": run.status.value, "simulated": run.simulated,
            "projection": run.projection,
            "engine": run.engine_kind, "model": run.model, "gpu": run.gpu, "gpu_count": run.gpu_count,
            "created_at": run.created_at.isoformat(), "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            "error": run.error, "tags": run.tags, "versions": run.versions, "config": run.config,
            "engine_instances": [{"name": i.name, "weight": i.weight, "kind": i.kind, "model": i.model,
                                  "argv": i.argv, "env": i.env, "version": i.version,
                                  "base_url": i.base_url, "startup_s": i.startup_s, "state": i.state,
                                  "exit_code": i.exit_code, "gpus": i.gpus, "error": i.error}
                                 for i in insts],
            "gpu_health": verdicts[-1].payload if verdicts else None,
            "blitz": blitz.payload if blitz is not None else None,   # a Blitz run's result (bench/blitz.py)
            "slo_search": searches[-1].payload if searches else None,
            "levels": level_docs,
        }


def runs_table(db: str | Path | None = None, limit: int = 50) -> str:
    factory = open_db(db)
    with factory() as s:
        runs = s.scalars(select(Run).order_by(Run.id.desc()).limit(limit)).all()
        rows = [[str(r.id), r.created_at.strftime("%Y-%m-%d %H:%M"), r.name or "-", r.engine_kind + (f" ({projection_label(r.projection, loud=True)}, SIMULATED)" if r.projection
                                  else " (SIMULATED)" if r.simulated else ""),
                 r.model, r.gpu or "-", prompt_label(r.config), _f(r.peak_output_tok_s), _f(r.best_goodput_req_s, 2),
                 r.status.value]
                for r in runs]
    return table(["id", "created (UTC)", "name", "engine", "model", "gpu", "prompts", "peak tok/s", "best goodput",
                  "status"], rows)


def plan_report(p) -> str:
    """`./melt plan`: the verdict, one row per LLM instance, one row per GPU (GB per GPU), then what to change.
    p: a bench.plan.Plan."""
    inst_rows = []
    for i in p.instances:
        flag, value = i.engine_setting()
        inst_rows.append([i.name, i.engine, i.model, ",".join(map(str, i.gpus)), f"{i.tp}x{i.dp}",
                          _f(i.fit.weights_gb), _f(i.fit.overhead_gb), _f(max(0.0, i.fit.kv_gb)),
                          f"{i.kv_tokens:,}", f"{i.context_len:,}", f"{i.max_concurrent:,}", f"{flag} {value:.3f}",
                          "yes" if i.fits else "NO"])
    inst = table(["instance", "engine", "model", "GPUs", "TPxDP", "weights GB", "runtime GB", "KV GB", "KV tokens",
                  "context", "max seqs", "engine memory setting", "fits"], inst_rows)
    gpu_rows = []
    for g in p.gpus:
        part = lambda name: sum(s.gb for s in g.segments if s.part == name)  # noqa: E731
        gpu_rows.append([str(g.index), _f(g.total_gb), _f(part("weights")), _f(part("runtime")), _f(part("KV cache")),
                         _f(part("service")), _f(part("free")), "fits" if g.fits else g.reason or "NO"])
    gpus = table(["GPU", "total GB", "weights", "runtime", "KV cache", "services", "free", "verdict"], gpu_rows)
    out = [p.verdict(), "", inst, "", gpus]
    if p.suggestions:
        out += ["", "what to change:", *p.suggestions]
    return "\n".join(out)


def slo_search_report(res: dict) -> str:
    """The SLO search's answer and its probes, for the terminal."""
    what = "concurrency" if res.get("mode") == "concurrency" else "request rate (req/s)"
    lims = ", ".join(f"{x['metric'].upper()} p{x['percentile']} <= {x['max_ms']:g} ms" for x in res.get("limits", []))
    head = f"SLO search ({lims}" + (f"; {res['preset']}" if res.get("preset") else "") + ")"
    probes = " -> ".join(f"{p['value']:g}{'+' if p['meets'] else 'x'}" for p in res.get("probes", []))
    if res.get("best") is None:
        body = f"no {what} met the limits: {res.get('reason')}"
    else:
        gp = res.get("goodput_req_s")
        tok = res.get("output_tok_s")
        body = (f"highest {what} meeting them: {res['best']:g}"
                + (f" · goodput {gp:.3g} req/s" if gp is not None else "")
                + (f" · {tok:,.0f} output tok/s" if tok is not None else "")
                + f" · {res.get('levels')} levels ({res.get('reason')})")
    return terminal_safe(f"{head}\n  {body}\n  probes (+ meets, x misses): {probes}")
