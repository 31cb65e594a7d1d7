"""Compare: 2–6 runs overlaid against concurrency, a one-line verdict, $ per 1M tokens, a side-by-side table at one
concurrency, the non-LLM services' own traffic side by side (only when a run has services), and a config diff. Runs
are labelled by what differs between them (bench.compare)."""
from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from app.ui import charts
from app.ui.common import esc_md, gpu_catalog, page_header, show_chart, show_table, sim_error_caption
from bench.compare import (figures, partner_for, picker_labels, run_labels, runs_without_services,
                           service_side_by_side, service_totals, verdict, with_cost)
from bench.engine_report import build_report, table_rows, to_markdown
from bench.mix import breakdown
from bench.repeats import interval_for, summaries_of
from bench.report import prompt_label
from storage import queries as q

page_header("Compare runs", "Pick 2–6 runs. Simulated runs are labelled SIMULATED in every legend and table.")

runs = q.list_runs(limit=500)
if len(runs) < 2:
    st.info("Compare needs at least two runs.")
    st.stop()
labels = picker_labels(runs)
asked, missing = [], []
for part in str(st.query_params.get("runs", "")).split(","):
    part = part.strip()
    if part.isdigit() and int(part) not in asked + missing:
        (asked if int(part) in labels else missing).append(int(part))
if missing:
    st.warning("Not in this history (deleted, or from another database): "
               + ", ".join(f"#{i}" for i in missing) + ".", icon=":material/search_off:")
if len(asked) == 1 and asked != st.session_state.get("_c_applied"):
    # "Compare with others" on Live links one run: pair it with the newest other run of the same model
    partner = partner_for(runs, asked[0])
    if partner is not None:
        st.caption(f"Added {esc_md(labels[partner])} to compare with; change the selection below.")
        asked.append(partner)
ss = st.session_state
# The URL (?runs=1,2) wins when it changed from outside (a link from Runs/Live); the widget wins otherwise.
if asked and asked[:6] != ss.get("_c_applied"):
    ss["c_runs"] = asked[:6]
elif "c_runs" not in ss:
    ss["c_runs"] = [r.id for r in runs[:2]]
ss["c_runs"] = [i for i in ss["c_runs"] if i in labels]  # runs deleted since
picked = st.multiselect("Runs", list(labels), format_func=lambda i: labels[i], max_selections=6, key="c_runs")
ss["_c_applied"] = list(picked)
st.query_params["runs"] = ",".join(map(str, picked))
if len(picked) < 2:
    st.info("Select at least two runs.")
    st.stop()

details = q.get_runs(picked)
any_sim = any(d.run.simulated for d in details)
legend = run_labels([d.run for d in details], {d.run.id: d.config for d in details})
cat, _ = gpu_catalog()
prices = {d.run.id: d.run.price_per_gpu_hour if d.run.price_per_gpu_hour is not None
          else (cat[d.run.gpu].price_per_hour if d.run.gpu in cat else None) for d in details}
rows_by_run = {d.run.id: with_cost(q.level_table(d), d.run.gpu_count, prices[d.run.id]) for d in details}
tables = [(legend[d.run.id], pd.DataFrame(rows_by_run[d.run.id])) for d in details]
done = [(lab, df[df["status"] == "completed"] if not df.empty else df) for lab, df in tables]
formats = {d.run.id: prompt_label(d.config) for d in details}
if len({f.split(" ")[0] for f in formats.values()}) > 1:
    st.warning("These runs mix text and token-id prompts: token ids skip the server's tokenizer, so a frontend-bound "
               "server looks faster with them. Compare like with like.", icon=":material/warning:")
if any_sim:
    st.warning("Includes SIMULATED runs: their numbers come from Melt's simulator, not a real GPU.",
               icon=":material/science:")
    for d in details:
        sim_error_caption(d, legend[d.run.id])
line = verdict([figures(legend[d.run.id], rows_by_run[d.run.id]) for d in details])
if line:
    st.markdown(f"#### {esc_md(line)}")
st.caption("$ at each run's price per GPU-hour (the run's own, else the GPU catalog's): "
           + " · ".join(f"{esc_md(legend[i])} " + (f"${p:,.2f}/h" if p is not None else "no price")
                        for i, p in prices.items()))

LATENCY = {"TTFT": "ttft", "TPOT": "tpot", "ITL": "itl", "E2E": "e2e"}
priced = [(lab, df.dropna(subset=["usd_per_m_output"])) for lab, df in done if not df.empty]
energy = [(lab, df.dropna(subset=["j_per_output_token"])) for lab, df in done if "j_per_output_token" in df]
# Lazy tabs, one chart each: only the open tab's chart is built and sent. A new document pays Plotly's start-up plus
# every chart it draws (five charts took 2.75 s to open on the 2-core machine, docs/PERFORMANCE.md).
CHART_TABS = ["Throughput", "Latency", "$ per 1M tokens", "Throughput vs latency", "Energy"]
t_tok, t_lat, t_usd, t_pareto, t_energy = st.tabs(CHART_TABS, key="c_chart_tab", on_change="rerun",
                                                  default=CHART_TABS[0])
if t_tok.open:
    with t_tok:
        show_chart(charts.by_concurrency(done, "output_tok_s", "Output tok/s vs concurrency", "tok/s",
                                         simulated=any_sim), key="c-tok", filename="compare_output_tok_s")
if t_lat.open:
    with t_lat:
        metric = st.segmented_control("Latency chart", list(LATENCY), default="TTFT", key="c_lat") or "TTFT"
        m = LATENCY[metric]
        show_chart(charts.by_concurrency(done, f"{m}_p50_ms", f"{metric} p50 (solid) / p99 (dashed) vs concurrency",
                                         "ms", simulated=any_sim, dash_col=f"{m}_p99_ms"),
                   key="c-lat-chart", filename=f"compare_{m}")
if t_usd.open:
    with t_usd:
        if any(not df.empty for _, df in priced):
            show_chart(charts.by_concurrency(priced, "usd_per_m_output", "$ per 1M output tokens vs concurrency",
                                             "$ / 1M output tokens", simulated=any_sim, log_y=True),
                       key="c-usd", filename="compare_usd_per_m")
        else:
            st.info("No price per GPU-hour for these runs: set one on the Cost page.")
if t_pareto.open:
    with t_pareto:
        show_chart(charts.pareto(done, simulated=any_sim), key="c-pareto", filename="compare_pareto")
if t_energy.open:
    with t_energy:
        if any(not df.empty for _, df in energy):
            show_chart(charts.by_concurrency(energy, "j_per_output_token", "Energy per output token", "J / token",
                                             simulated=any_sim), key="c-energy", filename="compare_energy")
        else:
            st.caption("No energy data in these runs (needs GPU telemetry with power readings).")

# ---------------------------------------------------------------------------------------- side-by-side table
st.subheader("Side by side")
concs = sorted({int(c) for _, df in done if not df.empty for c in df["concurrency"]})
choice = st.selectbox("At concurrency", ["peak throughput"] + concs, key="c_at",
                      help="Each run's level at this concurrency, or each run's best level.")
rows = []
for d, (lab, df) in zip(details, done):  # lab: the legend's label
    if df.empty:
        continue
    if choice == "peak throughput":
        row = df.loc[df["output_tok_s"].astype(float).idxmax()]
    else:
        sel = df[df["concurrency"] == choice]
        if sel.empty:
            continue
        row = sel.iloc[0]
    rows.append({"configuration": lab, "run": f"#{d.run.id}", "engine": d.run.engine_kind, "model": d.run.model,
                 "prompts": formats[d.run.id],
                 "GPU": f"{d.run.gpu or '?'} × {d.run.gpu_count}", "concurrency": int(row["concurrency"]),
                 "TTFT p50 ms": row["ttft_p50_ms"], "TTFT p99 ms": row["ttft_p99_ms"],
                 "E2E p50 ms": row["e2e_p50_ms"], "E2E p99 ms": row["e2e_p99_ms"], "TPOT p50 ms": row["tpot_p50_ms"],
                 "output tok/s": row["output_tok_s"], "tok/s per user": row["tok_s_per_user"],
                 "goodput req/s": row["goodput_req_s"], "$ / 1M output tokens": row["usd_per_m_output"],
                 "J / token": row.get("j_per_output_token"),
                 "failed": int(row["n_err"]), "steady tok/s": row.get("steady_output_tok_s"),
                 # mean ± 95% CI across repeats of this (concurrency, rate), whole-level and steady
                 **interval_for(d.levels, int(row["concurrency"]), row.get("request_rate"))})
if rows:
    side = pd.DataFrame(rows)
    show_table(side, key="c-side", filename="compare_side_by_side",
               column_config={**{c: st.column_config.NumberColumn(format="%.1f") for c in side.columns
                                 if c.endswith("ms") or c.startswith(("output", "tok/s"))},
                              "$ / 1M output tokens": st.column_config.NumberColumn(format="$%.3f"),
                              # H100 values are 0.02-0.5 J/token: one decimal would show most of them as 0.0
                              "J / token": st.column_config.NumberColumn(format="%.4f")})
else:
    st.caption("No run has a completed level at that concurrency.")

# ------------------------------------------------------------------------------------------ engine comparison
st.subheader("Engine comparison")
st.caption("One model on one GPU type, different engines or settings: TTFT, E2E, output tok/s, $ per 1K output tokens "
           "at each run's price and daily cost at 1M / 10M / 100M output tokens (pro-rated; *_provisioned: whole GPUs "
           "for 24 h). Also from the CLI: `./melt compare-engines RUN_ID... --format md|csv`.")
eng_at = st.selectbox("Level", ["peak throughput"] + concs, key="c_eng_at",
                      help="Each run's peak-throughput level, or every run's level at this concurrency.")
report = build_report([(d.run, d.config, q.level_table(d)) for d in details], prices,
                      None if eng_at == "peak throughput" else int(eng_at))
for w in report.warnings:
    st.warning(esc_md(w), icon=":material/warning:")
if report.best_pick:
    st.markdown(f"**{esc_md(report.best_pick)}**")
if report.rows:
    show_table(pd.DataFrame(table_rows(report)), key="c-eng", filename="engine_comparison")
    st.download_button("Download markdown", to_markdown(report), file_name="engine_comparison.md",
                       mime="text/markdown", key="c-eng-md", icon=":material/download:", on_click="ignore")
mixes = [(d, breakdown(summaries_of([lv for lv in d.levels if lv.status == "completed"]), d.run.gpu_count or 1,
                      prices[d.run.id])) for d in details]
for d, mix in mixes:  # deployments of several instances: each instance and the whole box, per level
    if mix:
        st.markdown(f"**{esc_md(legend[d.run.id])}: per instance and whole box**"
                    + (" — SIMULATED" if d.run.simulated else ""))
        show_table(pd.DataFrame(mix), key=f"c-mix-{d.run.id}", filename=f"run{d.run.id}_instances",
                   column_config={"$/1M out tok": st.column_config.NumberColumn(format="$%.4f")})

# ------------------------------------------------------------------------------------------ services' traffic
svc_runs = [(legend[d.run.id], summaries_of([lv for lv in d.levels if lv.status == "completed"]), d.config)
            for d in details]
svc = service_side_by_side(svc_runs)
if svc:  # only a deployment with non-LLM services (translate, TTS, ASR) has these; other runs show nothing here
    st.subheader("Services" + (" — includes SIMULATED runs" if any_sim else ""))
    st.caption("Each service's own traffic during each completed level, beside the LLM load and not in its figures: "
               "every arrival is ok or an error (HTTP status, timeout, over its max in flight = behind). ok req/s is "
               "over the level's window; asked req/s is the recipe's Poisson rate.")
    show_table(pd.DataFrame(service_totals(svc_runs)), key="c-svc-totals", filename="compare_services_totals",
               column_config={"ok %": st.column_config.NumberColumn(format="%.1f%%"),
                              "lowest ok req/s": st.column_config.NumberColumn(format="%.2f"),
                              "highest latency p99 ms": st.column_config.NumberColumn(format="%.1f")})
    st.markdown("**Per level and service, run by run**")
    show_table(pd.DataFrame(svc), key="c-svc", filename="compare_services",
               column_config={"ok %": st.column_config.NumberColumn(format="%.1f%%"),
                              "ok req/s": st.column_config.NumberColumn(format="%.2f"),
                              "latency p50 ms": st.column_config.NumberColumn(format="%.1f"),
                              "latency p99 ms": st.column_config.NumberColumn(format="%.1f")})
    if without := runs_without_services(svc_runs):
        st.caption("No service traffic in: " + ", ".join(esc_md(lab) for lab in without) + ".")

# ------------------------------------------------------------------------------------------------ config diff
diff = q.config_diff([d.config for d in details])
# lazy: its table is built and sent only when opened (one table less in a new document)
diff_box = st.expander(f"Config differences ({len(diff)} setting{'s' if len(diff) != 1 else ''})" if diff
                       else "Config differences (none)", key="c_diff_open", on_change="rerun")
if diff_box.open:
    with diff_box:
        if not diff:
            st.caption("The configs are identical.")
        else:
            cols = [f"#{d.run.id} {legend[d.run.id]}" for d in details]
            ddf = pd.DataFrame([{"setting": x["setting"], **{c: json.dumps(v) if isinstance(v, (list, dict)) else v
                                                             for c, v in zip(cols, x["values"])}} for x in diff])
            show_table(ddf.astype(str), key="c-diff", filename="compare_config_diff")
