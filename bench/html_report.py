"""A self-contained HTML report of one or several runs (`./melt report RUN_ID... -o report.html`, the Runs page).

For people without Melt: one file that opens offline, with no server. Plotly's JavaScript is inlined
(`plotly.offline.get_plotlyjs()`, ~4.5 MB), the figures are plain JSON handed to `Plotly.newPlot`, and nothing is
loaded from anywhere (no <script src>, no CDN, no fonts). Each chart's toolbar downloads it as PNG or SVG.

Contents: per run a summary (status, engine, model, GPUs, prompts, times, error), the levels table (whole-level
figures as in `show`, steady-state tok/s where measured, $ per 1M output tokens at the run's price), for a deployment
with non-LLM services their own traffic per level with the whole box's $ per 1,000 ok requests (bench.mix), the GPU
health verdict and the config; across the runs, output tok/s and TTFT (p50 solid, p99 dashed) against concurrency.
Simulated runs say SIMULATED in the title, their heading, a banner and their chart legends.

Everything in the file that a user or a server wrote (names, tags, model ids, errors, config values, verdict
reasons) is HTML-escaped; inside the <script> block, JSON has `<`, `>` and `&` written as \\u escapes, so no text can
close the script element, and Plotly's own label markup gets html-escaped text too (it renders a subset of HTML).
"""
from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

from bench.compare import run_labels
from bench.cost import money_digits, usd_per_million_tokens
from bench.mix import SERVICE_COST_NOTE, SERVICE_USD, has_services, service_rows
from bench.report import prompt_label, run_document, sim_error_lines
from storage.queries import projection_label

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#222;
padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.3rem;margin-top:2.5rem;border-bottom:1px solid #ccc}h3{font-size:1.05rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.25rem .5rem;
text-align:right}th{background:#f4f4f4}td.t,th.t{text-align:left}
.sim{background:#fff3cd;border:1px solid #e0b000;padding:.5rem 1rem;font-weight:600}
.bad{color:#a00}.chart{height:460px}pre{background:#f7f7f7;padding:.75rem;overflow:auto;font-size:.8rem}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}dt{font-weight:600}dd{margin:0}
"""


def esc(v) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def script_json(obj) -> str:
    """JSON safe inside <script>: nothing in it can end the element or open a comment."""
    text = json.dumps(obj, allow_nan=False, default=str)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _f(v, nd: int = 1) -> str:
    if v is None or v != v:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return f"{v:,}" if isinstance(v, int) else esc(v)


def _pct(lv: dict, key: str, stat: str):
    return (lv.get(key) or {}).get(stat)


def _price(doc: dict) -> float | None:
    return (doc.get("config") or {}).get("price_per_gpu_hour")


def _levels_table(doc: dict) -> str:
    price = _price(doc)
    cols = ["C", "rate", "rep", "status", "ok / sent", "failed", "dur s", "out tok/s", "steady tok/s", "req/s",
            "goodput", "TTFT p50", "TTFT p99", "TPOT p50", "ITL p50", "E2E p50", "$ / 1M out"]
    rows = []
    for lv in doc["levels"]:
        usd = usd_per_million_tokens(lv.get("output_tok_s"), doc.get("gpu_count") or 1, price) if price else None
        rate = lv.get("request_rate")
        cells = [_f(lv.get("concurrency")), "–" if rate is None else _f(float(rate), 2), _f((lv.get("repeat") or 0) + 1),
                 esc(lv.get("status")), f"{_f(lv.get('n_ok'))} / {_f(lv.get('n_sent'))}", _f(lv.get("n_err")),
                 _f(lv.get("duration_s")), _f(lv.get("output_tok_s")),
                 _f((lv.get("steady") or {}).get("output_tok_s")), _f(lv.get("req_s"), 2),
                 _f(lv.get("goodput_req_s"), 2), _f(_pct(lv, "ttft_ms", "p50")), _f(_pct(lv, "ttft_ms", "p99")),
                 _f(_pct(lv, "tpot_ms", "p50"), 2), _f(_pct(lv, "itl_ms", "p50"), 2), _f(_pct(lv, "e2e_ms", "p50")),
                 "–" if usd is None else f"${usd:,.3f}"]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        if lv.get("error"):
            rows.append(f'<tr><td class="t bad" colspan="{len(cols)}">level error: {esc(lv["error"])}</td></tr>')
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    note = (f"<p>$ per 1M output tokens at ${price:,.2f} per GPU-hour × {doc.get('gpu_count') or 1} GPU(s).</p>"
            if price else "<p>No price per GPU-hour was set for this run: no cost.</p>")
    return (f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{note}"
            "<p>Latencies in ms; whole-level figures as <code>vllm bench serve</code> defines them.</p>")


def _services_table(doc: dict) -> str:
    """The services' own traffic per level (every level that has it, with the level's status), "" for none."""
    if not has_services(doc["levels"]):
        return ""
    price = _price(doc)
    cols = ["C", "rate", "rep", "level status", "service", "sent", "ok", "err", "ok req/s", "latency p50",
            "latency p99", "box $ / 1K ok req", "top error"]
    rows = []
    for lv in doc["levels"]:
        for r in service_rows([lv], doc.get("gpu_count") or 1, price or None):
            usd = r.get(SERVICE_USD)
            cells = [_f(r["concurrency"]), "–" if r["rate"] is None else _f(float(r["rate"]), 2), _f(r["repeat"]),
                     esc(lv.get("status")), esc(r["service"]), _f(r["sent"]), _f(r["ok"]), _f(r["err"]),
                     _f(r["ok req/s"], 2), _f(r["latency p50 ms"]), _f(r["latency p99 ms"]),
                     "–" if usd is None else f"${money_digits(usd)}"]
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells)
                        + f'<td class="t{" bad" if r["top error"] else ""}">{esc(r["top error"])}</td></tr>')
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    note = esc(SERVICE_COST_NOTE) if price else "No price per GPU-hour was set for this run: no $ per request."
    return (f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            f"<p>Each service's recipe request at its Poisson rate during the LLM level, not in the LLM figures; "
            f"latencies in ms, ok req/s over the level's window. {note}</p>")


def _health(doc: dict) -> str:
    v = doc.get("gpu_health")
    if not isinstance(v, dict):
        return "<p>No GPU health verdict was recorded (no GPU telemetry for this run).</p>"
    status = v.get("status")
    reasons = v.get("reasons") or []
    out = f"<p><b>{esc(status)}</b>" + (" (simulated GPU)" if v.get("simulated") else "") + "</p>"
    if reasons:
        out += "<ul>" + "".join(f"<li>{esc(r)}</li>" for r in reasons) + "</ul>"
    checks = [c for c in v.get("checks") or [] if isinstance(c, dict)]
    if checks:
        out += ("<table><tr><th class='t'>check</th><th class='t'>result</th><th class='t'>detail</th></tr>"
                + "".join(f"<tr><td class='t'>{esc(c.get('title'))}</td><td class='t'>{esc(c.get('status'))}</td>"
                          f"<td class='t'>{esc(c.get('detail'))}</td></tr>" for c in checks) + "</table>")
    return out


def _summary(doc: dict) -> str:
    items = [("status", doc["status"]), ("engine", doc["engine"]), ("model", doc["model"]),
             ("GPU", f"{doc.get('gpu') or '?'} × {doc.get('gpu_count') or 1}"), ("prompts", prompt_label(doc["config"])),
             ("created (UTC)", doc.get("created_at")), ("finished (UTC)", doc.get("finished_at")),
             ("tags", ", ".join(map(str, doc.get("tags") or [])) or "–")]
    peak = max((lv.get("output_tok_s") or 0 for lv in doc["levels"]), default=0)
    items.append(("peak output tok/s", f"{peak:,.1f}" if peak else "–"))
    for inst in doc.get("engine_instances") or []:
        items.append((f"engine {inst.get('kind')}", f"{inst.get('version') or ''} {' '.join(map(str, inst.get('argv') or []))}"))
    versions = doc.get("versions") or {}
    if versions:
        items.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    out = "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items) + "</dl>"
    if doc.get("error"):
        out += f'<p class="bad">error: {esc(doc["error"])}</p>'
    return out


def _charts(docs: list[dict], labels: dict[int, str]) -> list[dict]:
    """Two figures (plain Plotly JSON): output tok/s and TTFT p50/p99 against concurrency, one colour per run."""
    tok, ttft = [], []
    for k, doc in enumerate(docs):
        color = COLORS[k % len(COLORS)]
        name = esc(labels[doc["run_id"]])
        lvs = sorted((lv for lv in doc["levels"] if lv.get("status") == "completed"),
                     key=lambda lv: (lv.get("concurrency") or 0, lv.get("request_rate") or 0, lv.get("repeat") or 0))
        x = [lv.get("concurrency") for lv in lvs]
        tok.append({"type": "scatter", "mode": "lines+markers", "name": name, "x": x,
                    "y": [lv.get("output_tok_s") for lv in lvs], "line": {"color": color}})
        for stat, dash in (("p50", "solid"), ("p99", "dash")):
            ttft.append({"type": "scatter", "mode": "lines+markers", "name": f"{name} {stat}", "x": x,
                         "y": [_pct(lv, "ttft_ms", stat) for lv in lvs], "line": {"color": color, "dash": dash}})
    sim = " (SIMULATED)" if any(d["simulated"] for d in docs) else ""

    def layout(title: str, ytitle: str) -> dict:
        return {"title": {"text": esc(title + sim)}, "xaxis": {"title": {"text": "concurrency"}, "type": "log"},
                "yaxis": {"title": {"text": ytitle}, "rangemode": "tozero"}, "legend": {"orientation": "h", "y": -0.22},
                "margin": {"t": 60}}

    return [{"id": "chart-tok", "data": tok, "layout": layout("Output tokens/s vs concurrency", "output tok/s")},
            {"id": "chart-ttft", "data": ttft, "layout": layout("TTFT vs concurrency (p50 solid, p99 dashed)", "ms")}]


def _clean(v):
    """NaN/inf (which JSON cannot hold) as null, for the charts' data."""
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


def render(docs: list[dict], plotly_js: str | None = None) -> str:
    """The report's HTML for these run documents (bench.report.run_document)."""
    if plotly_js is None:
        from plotly.offline import get_plotlyjs

        plotly_js = get_plotlyjs()
    runs = [SimpleNamespace(id=d["run_id"], gpu=d.get("gpu"), gpu_count=d.get("gpu_count"), engine_kind=d["engine"],
                            model=d["model"], name=d.get("name"), simulated=d["simulated"], config=d.get("config"))
            for d in docs]
    labels = run_labels(runs)
    any_sim = any(d["simulated"] for d in docs)
    title = "Melt report: " + "; ".join(labels[d["run_id"]] for d in docs)
    parts = [f"<h1>{esc(title)}</h1>",
             f"<p>Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by Melt from {len(docs)} run(s).</p>"]
    if any_sim:
        parts.append('<p class="sim">SIMULATED: ' + ("every run here is" if all(d["simulated"] for d in docs)
                     else "some runs here are") + " from Melt's simulator, not measured on real GPUs.</p>")
    parts.append("<h2>Charts</h2>" + "".join(f'<div class="chart" id="chart-{k}"></div>' for k in ("tok", "ttft")))
    parts.append("<p>Each chart's toolbar downloads it as PNG; the SVG button beside it as SVG.</p>")
    for d in docs:
        proj = d.get("projection") or {}
        sim = (f" [{projection_label(proj, loud=True)}, SIMULATED]" if proj else
               " [SIMULATED]" if d["simulated"] else "")
        name = f" · {d['name']}" if d.get("name") else ""
        parts.append(f"<h2>Run #{esc(d['run_id'])}{esc(sim)}: {esc(labels[d['run_id']])}{esc(name)}</h2>")
        if d["simulated"]:
            parts.append('<p class="sim">SIMULATED run: numbers from the simulator, not a real GPU.</p>')
            parts += [f'<p class="sim">{esc(line)}</p>' for line in sim_error_lines(d)]
        parts += ["<h3>Summary</h3>", _summary(d), "<h3>Levels</h3>", _levels_table(d)]
        if services := _services_table(d):
            parts += ["<h3>Services</h3>", services]
        parts += ["<h3>GPU health</h3>", _health(d), "<h3>Config</h3>",
                  f"<pre>{esc(json.dumps(d.get('config'), indent=2, default=str))}</pre>"]
    figures = _clean(_charts(docs, labels))
    boot = ("var F=" + script_json(figures) + ";"
            "var svg={name:'Download plot as SVG',icon:Plotly.Icons.disk,click:function(g){"
            "Plotly.downloadImage(g,{format:'svg',filename:g.id});}};"
            "F.forEach(function(f){Plotly.newPlot(f.id,f.data,f.layout,{responsive:true,displaylogo:false,"
            "modeBarButtonsToAdd:[svg],toImageButtonOptions:{format:'png',filename:f.id,scale:2}});});")
    safe_js = plotly_js.replace("</script", "<\\/script")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; script-src 'unsafe-inline' "
            "'unsafe-eval'; style-src 'unsafe-inline'; img-src data: blob:; font-src data:\">"
            f"<title>{esc(title)}</title><style>{CSS}</style>"
            f"<script>{safe_js}</script></head><body>{''.join(parts)}<script>{boot}</script></body></html>\n")


def build_report(run_ids: list[int], db=None) -> str:
    """The report of these runs (in the order given). LookupError for an id not in the history."""
    if not run_ids:
        raise LookupError("no runs given")
    return render([run_document(rid, db) for rid in dict.fromkeys(run_ids)])


def write_report(run_ids: list[int], path: str | Path, db=None) -> int:
    text = build_report(run_ids, db)
    Path(path).write_text(text, encoding="utf-8")
    return len(text.encode())
