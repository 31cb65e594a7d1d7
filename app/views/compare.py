"""Compare: 2–6 runs overlaid against concurrency, a side-by-side table at one concurrency, and a config diff."""
from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from app.ui import charts
from app.ui.common import page_header, show_chart, show_table
from bench.repeats import interval_for
from bench.report import prompt_label
from storage import queries as q

page_header("Compare runs", "Pick 2–6 runs. Simulated runs are labelled SIMULATED in every legend and table.")

runs = q.list_runs(limit=500)
if len(runs) < 2:
    st.info("Compare needs at least two runs.")
    st.stop()
labels = {r.id: r.label for r in runs}
asked = []
for part in str(st.query_params.get("runs", "")).split(","):
    if part.strip().isdigit() and int(part) in labels and int(part) not in asked:
        asked.append(int(part))
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
tables = [(d.run.label, pd.DataFrame(q.level_table(d))) for d in details]
done = [(lab, df[df["status"] == "completed"] if not df.empty else df) for lab, df in tables]
formats = {d.run.id: prompt_label(d.config) for d in details}
if len({f.split(" ")[0] for f in formats.values()}) > 1:
    st.warning("These runs mix text and token-id prompts: token ids skip the server's tokenizer, so a frontend-bound "
               "server looks faster with them. Compare like with like.", icon=":material/warning:")
if any_sim:
    st.warning("Includes SIMULATED runs: their numbers come from Melt's simulator, not a real GPU.",
               icon=":material/science:")

a, b = st.columns(2)
with a:
    show_chart(charts.by_concurrency(done, "output_tok_s", "Output tok/s vs concurrency", "tok/s", simulated=any_sim),
               key="c-tok", filename="compare_output_tok_s")
with b:
    show_chart(charts.by_concurrency(done, "ttft_p50_ms", "TTFT p50 (solid) / p99 (dashed) vs concurrency", "ms",
                                     simulated=any_sim, dash_col="ttft_p99_ms"),
               key="c-ttft", filename="compare_ttft")
a, b = st.columns(2)
with a:
    show_chart(charts.pareto(done, simulated=any_sim), key="c-pareto", filename="compare_pareto")
with b:
    energy = [(lab, df.dropna(subset=["j_per_output_token"])) for lab, df in done if "j_per_output_token" in df]
    if any(not df.empty for _, df in energy):
        show_chart(charts.by_concurrency(energy, "j_per_output_token", "Energy per output token", "J / token",
                                         simulated=any_sim), key="c-energy", filename="compare_energy")
    else:
        st.info("No energy data in these runs (needs GPU telemetry with power readings).")

# ---------------------------------------------------------------------------------------- side-by-side table
st.subheader("Side by side")
concs = sorted({int(c) for _, df in done if not df.empty for c in df["concurrency"]})
choice = st.selectbox("At concurrency", ["peak throughput"] + concs, key="c_at",
                      help="Each run's level at this concurrency, or each run's best level.")
rows = []
for d, (lab, df) in zip(details, done):
    if df.empty:
        continue
    if choice == "peak throughput":
        row = df.loc[df["output_tok_s"].astype(float).idxmax()]
    else:
        sel = df[df["concurrency"] == choice]
        if sel.empty:
            continue
        row = sel.iloc[0]
    rows.append({"configuration": lab, "engine": d.run.engine_kind, "model": d.run.model,
                 "prompts": formats[d.run.id],
                 "GPU": f"{d.run.gpu or '?'} × {d.run.gpu_count}", "concurrency": int(row["concurrency"]),
                 "TTFT p50 ms": row["ttft_p50_ms"], "TTFT p99 ms": row["ttft_p99_ms"],
                 "E2E p50 ms": row["e2e_p50_ms"], "E2E p99 ms": row["e2e_p99_ms"], "TPOT p50 ms": row["tpot_p50_ms"],
                 "output tok/s": row["output_tok_s"], "tok/s per user": row["tok_s_per_user"],
                 "goodput req/s": row["goodput_req_s"], "J / token": row.get("j_per_output_token"),
                 "failed": int(row["n_err"]), "steady tok/s": row.get("steady_output_tok_s"),
                 # mean ± 95% CI across repeats of this (concurrency, rate), whole-level and steady
                 **interval_for(d.levels, int(row["concurrency"]), row.get("request_rate"))})
if rows:
    side = pd.DataFrame(rows)
    show_table(side, key="c-side", filename="compare_side_by_side",
               column_config={**{c: st.column_config.NumberColumn(format="%.1f") for c in side.columns
                                 if c.endswith("ms") or c.startswith(("output", "tok/s"))},
                              # H100 values are 0.02-0.5 J/token: one decimal would show most of them as 0.0
                              "J / token": st.column_config.NumberColumn(format="%.4f")})
else:
    st.caption("No run has a completed level at that concurrency.")

# ------------------------------------------------------------------------------------------------ config diff
st.subheader("Config differences")
diff = q.config_diff([d.config for d in details])
if not diff:
    st.caption("The configs are identical.")
else:
    cols = [f"#{d.run.id}" for d in details]
    ddf = pd.DataFrame([{"setting": x["setting"], **{c: json.dumps(v) if isinstance(v, (list, dict)) else v
                                                     for c, v in zip(cols, x["values"])}} for x in diff])
    show_table(ddf.astype(str), key="c-diff", filename="compare_config_diff")
