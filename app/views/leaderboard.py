"""Leaderboard: Blitz scores per GPU model across the history (bench.blitz.leaderboard): best and median, how many
runs, health, versions, a ranking chart. Simulated entries are kept in their own table and chart, labelled."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app.ui import charts
from app.ui.common import esc_md, fmt_dt, page_header, show_chart, show_table
from bench.blitz import leaderboard
from storage import queries as q

page_header("Leaderboard", "Blitz scores (steady-state output tok/s at the concurrency that saturates the GPU) per "
            "GPU model, from every Blitz run in this history.")

entries = q.blitz_results()
board = leaderboard(entries)
if not entries:
    st.info("No Blitz run in this history yet: run one on the Blitz page or with `./melt blitz`.")
    st.stop()


def _table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{
        "rank": r["rank"], "GPU": r["gpu"], "best tok/s": round(r["best"], 1), "median tok/s": round(r["median"], 1),
        "runs": r["count"], "best run": f"#{r['best_run_id']}",
        "tok/s per W (best)": round(r["best_tok_s_per_w"], 2) if r.get("best_tok_s_per_w") else None,
        "roofline % (best)": round(100 * r["best_roofline_share"], 1) if r.get("best_roofline_share") else None,
        "health": r["health"] + ("" if len(r["health_counts"]) == 1 else " (" + ", ".join(
            f"{n} {h}" for h, n in r["health_counts"].items()) + ")"),
        "engines": ", ".join(r["engines"]), "drivers": ", ".join(r["drivers"]) or "–"} for r in rows])


for kind, title in (("real", "Measured GPUs"), ("simulated", "Simulated GPUs (SIMULATED: the roofline model, not hardware)")):
    rows = board[kind]
    if not rows:
        if kind == "real":
            st.caption("No Blitz on real hardware yet.")
        continue
    st.subheader(title)
    show_chart(charts.ranking_bars(rows, simulated=kind == "simulated",
                                   title="Blitz score by GPU (best run, median marked)"),
               key=f"lb-chart-{kind}", filename=f"leaderboard_{kind}")
    show_table(_table(rows), key=f"lb-{kind}", filename=f"leaderboard_{kind}")

with st.expander(f"Every Blitz run ({len(entries)})"):
    show_table(pd.DataFrame([{
        "run": e["run_id"], "name": e["name"], "created": fmt_dt(e["created_at"]), "GPU": e["gpu"],
        "simulated": e["simulated"], "status": e["status"],
        "score tok/s": e["result"].get("score_output_tok_s"), "concurrency": e["result"].get("concurrency"),
        "health": (e["result"].get("health") or {}).get("status")} for e in entries]),
        key="lb-all", filename="blitz_runs")
    st.caption("Open one: " + " ".join(f"[#{e['run_id']}](/blitz?run={e['run_id']})" for e in entries[:20]))
    st.caption(esc_md("Scores count only completed measured levels; a run without one is listed here but not ranked."))
