"""Cost: from measured throughput and a price per GPU-hour, $ per 1M output tokens per level for one or several runs
side by side, the cheapest level that meets the SLOs, daily cost at 1M / 10M / 100M tokens per day, and GPUs needed
for a target rate (for one run of the selection); for a deployment with non-LLM services, the whole box's $ per 1,000
ok requests of each service per level (bench.mix.SERVICE_COST_NOTE). Deep links: ?run=ID or ?runs=3,7."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app.ui import charts
from app.ui.common import esc_md, gpu_catalog, page_header, show_chart, show_table
from bench.compare import cost_line, picker_labels, run_labels
from bench.cost import (SLO_PRESETS, LevelPerf, cheapest_meeting_slo, daily_cost, gpus_needed, latency_break,
                        level_costs)
from bench.mix import SERVICE_COST_NOTE, SERVICE_USD, breakdown, service_rows
from bench.repeats import summaries_of
from storage import queries as q

page_header("Cost", "Measured throughput × your price per GPU-hour. Pick several runs to see which is cheaper per "
                    "token; edit the prices (defaults: the run's, else the GPU catalog's).")
ss = st.session_state
runs = [r for r in q.list_runs(limit=500) if r.peak_output_tok_s]
if not runs:
    st.info("No run with a completed level yet.")
    st.stop()
labels = picker_labels(runs)
raw = str(st.query_params.get("runs") or st.query_params.get("run") or "")
asked = [int(p) for p in raw.split(",") if p.strip().isdigit()]
missing = [i for i in asked if i not in labels]
asked = [i for i in asked if i in labels][:6]
if missing:
    st.error("Not found in this history (or without a completed level): " + ", ".join(f"#{i}" for i in missing)
             + ". Pick runs below.", icon=":material/search_off:")
if raw and raw != ss.get("_cost_applied"):  # a followed link wins over the widget
    ss["cost_runs"] = asked
elif "cost_runs" not in ss:
    ss["cost_runs"] = [runs[0].id]
ss["cost_runs"] = [i for i in ss["cost_runs"] if i in labels]
picked = st.multiselect("Runs", list(labels), format_func=lambda i: labels[i], max_selections=6, key="cost_runs")
key = ",".join(map(str, picked))
ss["_cost_applied"] = key
if picked:
    st.query_params.pop("run" if len(picked) > 1 else "runs", None)
    st.query_params["runs" if len(picked) > 1 else "run"] = key
if not picked:
    st.info("Pick one or more runs.")
    st.stop()

details = q.get_runs(picked)
legend = run_labels([d.run for d in details], {d.run.id: d.config for d in details})
any_sim = any(d.run.simulated for d in details)
if any_sim:
    st.warning("Includes SIMULATED runs: their costs project simulated throughput, not a measurement.",
               icon=":material/science:")

headline = st.container()  # the cheapest-per-token line goes here, above the inputs, once it is computed
cat, _ = gpu_catalog()
first = details[0]
slo_cfg = (first.config.get("workload") or {}).get("slo") or {}


def _apply_preset() -> None:
    """A preset fills the SLO inputs (still editable), at p99 as MLPerf binds them."""
    choice = ss.get("cost_preset")
    vals = SLO_PRESETS.get(choice) or (slo_cfg if choice == "from the run" else {})
    for k in ("ttft", "tpot", "e2e"):
        ss[f"cost_{k}"] = float(vals.get(f"{k}_ms") or 0)
    ss["cost_pct"] = "p99"


with st.container(border=True):
    price, gpus = {}, {}
    for d, col in zip(details, st.columns(len(details))):
        r = d.run
        cat_price = cat[r.gpu].price_per_hour if r.gpu in cat else None
        default_price = r.price_per_gpu_hour if r.price_per_gpu_hour is not None else (cat_price or 2.0)
        with col:
            st.markdown(f"**{esc_md(legend[r.id])}**")
            pcol, gcol = st.columns(2)
            price[r.id] = pcol.number_input(
                "Price per GPU-hour ($)", min_value=0.0, value=float(default_price), step=0.1, format="%.2f",
                key=f"cost_price_{r.id}", help=f"Run's price: {r.price_per_gpu_hour}; catalog ({esc_md(r.gpu)}): "
                                               f"{cat_price}")
            gpus[r.id] = int(gcol.number_input("GPUs per replica", min_value=1, value=int(r.gpu_count or 1), step=1,
                                             key=f"cost_gpus_{r.id}"))
    st.selectbox("SLO preset", ["from the run", *SLO_PRESETS, "none"], key="cost_preset", on_change=_apply_preset,
                 help="MLPerf Inference's p99 bounds for Llama-2-70B (interactive: v5.0's low-latency scenario). "
                      "'from the run': the SLOs it was launched with.")
    x, y, z, w, v = st.columns(5)
    pct = x.segmented_control("SLO percentile", ["p50", "p90", "p99"], default="p99", key="cost_pct") or "p99"
    slo_ttft = y.number_input("SLO TTFT ms (0 = none)", min_value=0.0, value=float(slo_cfg.get("ttft_ms") or 0),
                              step=50.0, key="cost_ttft")
    slo_tpot = z.number_input("SLO TPOT ms (0 = none)", min_value=0.0, value=float(slo_cfg.get("tpot_ms") or 0),
                              step=5.0, key="cost_tpot")
    slo_e2e = w.number_input("SLO E2E ms (0 = none)", min_value=0.0, value=float(slo_cfg.get("e2e_ms") or 0),
                             step=500.0, key="cost_e2e")
    max_err = v.number_input("Max failed requests %", min_value=0.0, max_value=100.0, value=0.0, step=0.5,
                             key="cost_err")

slo = {"ttft_ms": slo_ttft or None, "tpot_ms": slo_tpot or None, "e2e_ms": slo_e2e or None}
costs, best = {}, {}
for d in details:
    perfs = [LevelPerf.from_summary(lv.summary, concurrency=lv.concurrency, output_tok_s=lv.output_tok_s)
             for lv in d.levels if lv.status == "completed" and lv.summary]
    costs[d.run.id] = level_costs(perfs, gpus[d.run.id], float(price[d.run.id]), slo, pct, max_err / 100)
    best[d.run.id] = cheapest_meeting_slo(costs[d.run.id])
frames = {rid: pd.DataFrame([{"concurrency": c.concurrency, "output_tok_s": c.output_tok_s,
                              "usd_per_m_output": c.usd_per_m_output, "meets_slo": c.meets_slo,
                              "why_not": "; ".join(c.reasons)} for c in cs],
                            columns=["concurrency", "output_tok_s", "usd_per_m_output", "meets_slo", "why_not"])
          for rid, cs in costs.items()}
money = {"usd_per_m_output": st.column_config.NumberColumn("$ / 1M output tokens", format="$%.4f"),
         "output_tok_s": st.column_config.NumberColumn("output tok/s", format="%.0f")}

if len(details) > 1:
    line = cost_line({legend[rid]: b for rid, b in best.items()})
    if line:
        headline.markdown(f"#### {esc_md(line)}")
    summary = pd.DataFrame([{
        "run": legend[d.run.id], "id": f"#{d.run.id}", "$ / GPU-hour": price[d.run.id], "GPUs": gpus[d.run.id],
        "cheapest level meeting SLOs": f"C = {best[d.run.id].concurrency:,}" if best[d.run.id] else "none",
        "$ / 1M output tokens there": best[d.run.id].usd_per_m_output if best[d.run.id] else None,
        "output tok/s there": best[d.run.id].output_tok_s if best[d.run.id] else None,
        "latency breaks at": (f"C = {brk.concurrency:,}" if (brk := latency_break(costs[d.run.id])) else "–"),
        "peak output tok/s": d.run.peak_output_tok_s} for d in details])
    # Lazy tabs: the chart is built and sent only when its tab is opened. A new document with no chart skips
    # Plotly's start-up in the browser (~0.5-1 s of the 2-core machine; docs/PERFORMANCE.md).
    t_table, t_chart = st.tabs(["By run", "$ per 1M vs concurrency"], key="cost_runs_tab", on_change="rerun")
    if t_table.open:
        with t_table:
            show_table(summary, key="cost-runs", filename="cost_by_run",
                       column_config={"$ / GPU-hour": st.column_config.NumberColumn(format="$%.2f"),
                                      "$ / 1M output tokens there": st.column_config.NumberColumn(format="$%.4f"),
                                      "output tok/s there": st.column_config.NumberColumn(format="%.0f"),
                                      "peak output tok/s": st.column_config.NumberColumn(format="%.0f")})
    if t_chart.open:
        with t_chart:
            priced = [(legend[rid], df.dropna(subset=["usd_per_m_output"])) for rid, df in frames.items()]
            show_chart(charts.by_concurrency(priced, "usd_per_m_output", "$ per 1M output tokens vs concurrency",
                                             "$ / 1M output tokens", simulated=any_sim, log_y=True),
                       key="cost-runs-chart", filename="cost_by_run")
    st.divider()
    if ss.get("cost_detail") not in picked:  # that run was taken out of the selection
        ss.pop("cost_detail", None)
    detail_id = st.selectbox("Daily cost and GPUs needed for", [d.run.id for d in details],
                             format_func=lambda i: labels[i], key="cost_detail")
else:
    detail_id = details[0].run.id

d = next(x for x in details if x.run.id == detail_id)
r, run_id = d.run, d.run.id
df, best_r = frames[run_id], best[run_id]
gpus_per_replica = gpus[run_id]
sim = " (SIMULATED)" if r.simulated else ""
if not costs[run_id]:
    st.info(f"{esc_md(legend[run_id])} has no completed level with a summary.")
    st.stop()
m1, m2, m3 = st.columns(3)
if best_r is not None:
    m1.metric(f"Cheapest level meeting SLOs{sim}", f"C = {best_r.concurrency}", border=True)
    m2.metric(f"$ per 1M output tokens{sim}", f"${best_r.usd_per_m_output:,.3f}", border=True)
    m3.metric(f"Output tok/s there{sim}", f"{best_r.output_tok_s:,.0f}", border=True)
else:
    m1.metric("Cheapest level meeting SLOs", "none", border=True)
    st.warning("No level meets the SLOs: the why_not column says what each level missed.")
if len(details) == 1:
    t_levels, t_bars = st.tabs(["Per level", "Chart"], key="cost_level_tab", on_change="rerun")  # lazy, as above
    if t_levels.open:
        with t_levels:
            show_table(df, key=f"cost-levels-{run_id}", filename=f"run{run_id}_cost_per_level", column_config=money)
    if t_bars.open:
        with t_bars:
            show_chart(charts.cost_bars(df, simulated=r.simulated, cheapest=best_r.concurrency if best_r else None),
                       key="cost-bars", filename=f"run{run_id}_cost_per_level")
else:
    show_table(df, key=f"cost-levels-{run_id}", filename=f"run{run_id}_cost_per_level", column_config=money)
mix = breakdown(summaries_of([lv for lv in d.levels if lv.status == "completed"]), gpus[run_id], float(price[run_id]))
if mix:  # a deployment of several instances: the box's $ above, each instance's share of the box's traffic here
    st.markdown(f"**Per instance and whole box{sim}**: the $ is the whole box's (all its GPUs over all its tokens)")
    show_table(pd.DataFrame(mix), key=f"cost-mix-{run_id}", filename=f"run{run_id}_cost_per_instance",
               column_config={"$/1M out tok": st.column_config.NumberColumn(format="$%.4f")})
svc = service_rows(summaries_of([lv for lv in d.levels if lv.status == "completed"]), gpus[run_id],
                   float(price[run_id]))
if svc:  # non-LLM services (translate, TTS, ASR): $ per 1M tokens above stays LLM tokens; these are per request
    st.markdown(f"**Services: whole box $ per 1,000 ok requests{sim}**"
                + (f" — {esc_md(legend[run_id])}" if len(details) > 1 else ""))
    show_table(pd.DataFrame(svc), key=f"cost-svc-{run_id}", filename=f"run{run_id}_cost_per_service",
               column_config={SERVICE_USD: st.column_config.NumberColumn(format="$%.4f"),
                              "ok req/s": st.column_config.NumberColumn(format="%.2f"),
                              "latency p50 ms": st.column_config.NumberColumn(format="%.1f"),
                              "latency p99 ms": st.column_config.NumberColumn(format="%.1f")})
    st.caption(esc_md(f"{SERVICE_COST_NOTE} Here: {gpus[run_id]} GPU(s) at ${float(price[run_id]):,.2f} per "
                      "GPU-hour (the inputs above)."))
brk = latency_break(costs[run_id])
if brk is not None:
    st.caption(f"Latency breaks at C = {brk.concurrency:,}: {esc_md('; '.join(brk.reasons))}.")

# --------------------------------------------------------------------------------------------- daily cost
st.subheader("Daily cost" + (f" — {esc_md(legend[run_id])}" if len(details) > 1 else sim))
usable = [c for c in costs[run_id] if c.output_tok_s]
default_level = (best_r or max(usable, key=lambda c: c.output_tok_s)).concurrency
level_opts = [c.concurrency for c in usable]
a, b, c = st.columns(3)
at = a.selectbox("At level (concurrency)", level_opts, index=level_opts.index(default_level), key=f"cost_at_{run_id}",
                 help="Default: the cheapest level meeting the SLOs, else the highest-throughput one.")
peak = b.number_input("Peak / average traffic", min_value=1.0, value=1.0, step=0.5, key=f"cost_peak_{run_id}",
                      help="Provisioned replicas are sized for the average rate times this factor.")
custom = c.number_input("Custom tokens/day (millions)", min_value=0.0, value=0.0, step=10.0, key=f"cost_custom_{run_id}")
tok_s = next(c.output_tok_s for c in usable if c.concurrency == at)
volumes = [1e6, 10e6, 100e6] + ([custom * 1e6] if custom else [])
daily = []
for v in volumes:
    dc = daily_cost(v, tok_s, int(gpus_per_replica), float(price[run_id]), peak)
    daily.append({"output tokens/day": f"{v / 1e6:,.0f}M", "avg tok/s": dc.avg_tok_s, "replicas": dc.replicas,
                  "GPUs": dc.gpus, "$ / day provisioned (24 h)": dc.usd_provisioned,
                  "$ / day pro-rated (GPU-seconds used)": dc.usd_prorated, "utilisation": dc.utilisation})
show_table(pd.DataFrame(daily), key="cost-daily", filename=f"run{run_id}_daily_cost",
           column_config={"$ / day provisioned (24 h)": st.column_config.NumberColumn(format="$%.2f"),
                          "$ / day pro-rated (GPU-seconds used)": st.column_config.NumberColumn(format="$%.2f"),
                          "avg tok/s": st.column_config.NumberColumn(format="%.1f"),
                          "utilisation": st.column_config.NumberColumn(format="percent")})

st.subheader("GPUs needed for a target rate" + sim)
a, b = st.columns(2)
target = a.number_input("Target output tokens/s", min_value=0.0, value=float(round(tok_s * 10)), step=100.0,
                        key=f"cost_target_{run_id}")
n = gpus_needed(target, tok_s, int(gpus_per_replica))
b.metric(f"GPUs at C = {at}", f"{n:,}", help=f"{tok_s:,.0f} tok/s per replica of {int(gpus_per_replica)} GPU(s)",
         border=True)

if cat:
    prices_box = st.expander("Catalog prices (defaults)", key="cost_catalog_open", on_change="rerun")  # lazy
    if prices_box.open:
        with prices_box:
            show_table(pd.DataFrame([{"GPU": g.id, "name": g.name, "$ / GPU-hour": g.price_per_hour,
                                      "memory GB": g.memory_gb} for g in cat.values()]),
                       key="cost-catalog", filename="gpu_catalog_prices")
