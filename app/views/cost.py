"""Cost: from a run's measured throughput and a price per GPU-hour, $ per 1M output tokens per level, the cheapest
level that meets the SLOs, daily cost at 1M / 10M / 100M tokens per day, and GPUs needed for a target rate."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app.ui import charts
from app.ui.common import esc_md, gpu_catalog, page_header, show_chart, show_table
from bench.compare import picker_labels
from bench.cost import LevelPerf, cheapest_meeting_slo, daily_cost, gpus_needed, level_costs
from storage import queries as q

page_header("Cost", "Measured throughput × your price per GPU-hour. Edit the price; the defaults come from the run "
                    "or the GPU catalog.")
ss = st.session_state
runs = [r for r in q.list_runs(limit=500) if r.peak_output_tok_s]
if not runs:
    st.info("No run with a completed level yet.")
    st.stop()
labels = picker_labels(runs)
asked = st.query_params.get("run")
asked_id = int(asked) if asked and asked.isdigit() and int(asked) in labels else None
if asked_id is not None and asked_id != ss.get("_cost_applied"):
    ss["cost_run"] = asked_id
if ss.get("cost_run") not in labels:
    ss["cost_run"] = runs[0].id
run_id = st.selectbox("Run", list(labels), format_func=lambda i: labels[i], key="cost_run")
ss["_cost_applied"] = run_id
st.query_params["run"] = str(run_id)

d = q.get_run(run_id)
if d is None:
    st.error("Run not found.")
    st.stop()
r = d.run
if r.simulated:
    st.warning("SIMULATED run: these costs project simulated throughput, not a measurement.", icon=":material/science:")

cat, _ = gpu_catalog()
cat_price = cat[r.gpu].price_per_hour if r.gpu in cat else None
default_price = r.price_per_gpu_hour if r.price_per_gpu_hour is not None else (cat_price or 2.0)
slo_cfg = (d.config.get("workload") or {}).get("slo") or {}

with st.container(border=True):
    a, b, c = st.columns(3)
    price = a.number_input("Price per GPU-hour ($)", min_value=0.0, value=float(default_price), step=0.1,
                           format="%.2f", key=f"cost_price_{run_id}",
                           help=f"Run's price: {r.price_per_gpu_hour}; catalog ({esc_md(r.gpu)}): {cat_price}")
    gpus_per_replica = b.number_input("GPUs per replica", min_value=1, value=int(r.gpu_count or 1), step=1,
                                      key=f"cost_gpus_{run_id}")
    pct = c.segmented_control("SLO percentile", ["p50", "p90", "p99"], default="p99", key=f"cost_pct_{run_id}") or "p99"
    x, y, z, w = st.columns(4)
    slo_ttft = x.number_input("SLO TTFT ms (0 = none)", min_value=0.0, value=float(slo_cfg.get("ttft_ms") or 0),
                              step=50.0, key=f"cost_ttft_{run_id}")
    slo_tpot = y.number_input("SLO TPOT ms (0 = none)", min_value=0.0, value=float(slo_cfg.get("tpot_ms") or 0),
                              step=5.0, key=f"cost_tpot_{run_id}")
    slo_e2e = z.number_input("SLO E2E ms (0 = none)", min_value=0.0, value=float(slo_cfg.get("e2e_ms") or 0),
                             step=500.0, key=f"cost_e2e_{run_id}")
    max_err = w.number_input("Max failed requests %", min_value=0.0, max_value=100.0, value=0.0, step=0.5,
                             key=f"cost_err_{run_id}")

slo = {"ttft_ms": slo_ttft or None, "tpot_ms": slo_tpot or None, "e2e_ms": slo_e2e or None}
perfs = [LevelPerf.from_summary(lv.summary, concurrency=lv.concurrency, output_tok_s=lv.output_tok_s)
         for lv in d.levels if lv.status == "completed" and lv.summary]
if not perfs:
    st.info("This run has no completed level with a summary.")
    st.stop()
costs = level_costs(perfs, int(gpus_per_replica), float(price), slo, pct, max_err / 100)
best = cheapest_meeting_slo(costs)

df = pd.DataFrame([{"concurrency": c.concurrency, "output_tok_s": c.output_tok_s,
                    "usd_per_m_output": c.usd_per_m_output, "meets_slo": c.meets_slo,
                    "why_not": "; ".join(c.reasons)} for c in costs])
m1, m2, m3 = st.columns(3)
sim = " (SIMULATED)" if r.simulated else ""
if best is not None:
    m1.metric(f"Cheapest level meeting SLOs{sim}", f"C = {best.concurrency}", border=True)
    m2.metric(f"$ per 1M output tokens{sim}", f"${best.usd_per_m_output:,.3f}", border=True)
    m3.metric(f"Output tok/s there{sim}", f"{best.output_tok_s:,.0f}", border=True)
else:
    m1.metric("Cheapest level meeting SLOs", "none", border=True)
    st.warning("No level meets the SLOs: the why_not column says what each level missed.")

show_chart(charts.cost_bars(df, simulated=r.simulated, cheapest=best.concurrency if best else None), key="cost-bars",
           filename=f"run{run_id}_cost_per_level")
show_table(df, key="cost-levels", filename=f"run{run_id}_cost_per_level",
           column_config={"usd_per_m_output": st.column_config.NumberColumn("$ / 1M output tokens", format="$%.4f"),
                          "output_tok_s": st.column_config.NumberColumn("output tok/s", format="%.0f")})

# --------------------------------------------------------------------------------------------- daily cost
st.subheader("Daily cost" + sim)
usable = [c for c in costs if c.output_tok_s]
default_level = (best or max(usable, key=lambda c: c.output_tok_s)).concurrency
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
    dc = daily_cost(v, tok_s, int(gpus_per_replica), float(price), peak)
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
    with st.expander("Catalog prices (defaults)"):
        show_table(pd.DataFrame([{"GPU": g.id, "name": g.name, "$ / GPU-hour": g.price_per_hour,
                                  "memory GB": g.memory_gb} for g in cat.values()]),
                   key="cost-catalog", filename="gpu_catalog_prices")
