"""Blitz: one button ranks this GPU (bench/blitz.py): the concurrency search, the measured minutes, the score with
energy, latency, roofline share, health and versions, and the power / temperature / clock curves.
`?run=ID` shows that Blitz run; without it the newest one."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app.ui import charts
from app.ui.common import (detected_engines, detected_gpus, esc_md, fmt_dt, gpu_catalog, page_header, show_chart,
                           show_table, sim_badge, status_badge, worker_api)
from bench.blitz import AGREEMENT, TAG, against_previous, result_rows
from bench.config import RunConfig, stored_engine_command
from bench.tables import fmt_rate, fmt_small
from catalog.loader import match_nvml_name
from storage import queries as q

page_header("Blitz", "Qwen3-0.6B on vLLM (dummy weights unless real ones are here): doubling concurrency until "
            "steady-state output tok/s rises by less than 10%, then the chosen minutes there. One score, with "
            "energy, latency, roofline share and GPU health. Without a GPU it runs on the simulator, labelled "
            "SIMULATED.")

cat, cat_err = gpu_catalog()
gpus, _ = detected_gpus()
engines, _ = detected_engines()
vllm_ok = bool(gpus) and any(e["kind"] == "vllm" and e["installed"] for e in engines)
detected = match_nvml_name(gpus[0].get("name"), cat) if gpus else None

with st.container(border=True):
    a, b, c, d = st.columns([1, 1.4, 1, 1.2], vertical_alignment="bottom")
    engine = a.selectbox("Engine", ["vllm", "sim"] if vllm_ok else ["sim"], key="b_engine",
                         help="vLLM needs an NVIDIA GPU and vLLM installed (./melt engines install vllm); "
                              "sim is Melt's simulator")
    ids = list(cat)
    default = detected or ("H100-SXM-80GB" if "H100-SXM-80GB" in cat else (ids[0] if ids else None))
    gpu = b.selectbox("GPU" + (" (simulated)" if engine == "sim" else ""), ids,
                      index=ids.index(default) if default in ids else 0, key="b_gpu")
    minutes = c.number_input("Minutes measured", min_value=0.1, max_value=60.0, value=5.0, step=0.5, key="b_minutes")
    start = d.button("Run Blitz", type="primary", key="b_start", icon=":material/bolt:", disabled=not gpu)
    if not vllm_ok:
        st.caption("No GPU with vLLM here: the Blitz runs on the simulator and is labelled SIMULATED.")

if start:
    runs = worker_api()
    if runs is not None:
        from bench.blitz_run import blitz_config

        try:
            run_id = runs.start_run(blitz_config(engine, gpu, float(minutes)))
        except Exception as e:  # noqa: BLE001 - a bad setting or an unwritable history: say it, start nothing
            st.error(f"Blitz not started: {esc_md(e)}")
        else:
            st.query_params["run"] = str(run_id)
            st.rerun()

# which Blitz run to show: ?run=ID, else the newest
blitz_runs = q.list_runs(tags=[TAG], limit=200)
wanted = st.query_params.get("run")
shown = None
if wanted and wanted.isdigit():
    shown = next((r for r in blitz_runs if r.id == int(wanted)), None)
    if shown is None:
        st.warning(f"Run {esc_md(wanted)} is not a Blitz run of this history.")
elif blitz_runs:
    shown = blitz_runs[0]
if shown is None:
    if not blitz_runs:
        st.info("No Blitz run yet: press **Run Blitz**.")
    st.stop()


def _result(run_id: int) -> dict | None:
    ev = q.events(run_id, kinds=["blitz"], limit=1)
    return ev[-1].payload if ev else None


def _run_again(run_id: int, config: dict) -> None:
    """'Run this Blitz again': the stored config as it is (same search start, repeats, minutes, lengths, engine
    arguments), so the two runs compare. A stored engine command (the run may come from someone else's history file)
    is shown and needs a confirm first, as on the Runs page."""
    ss = st.session_state
    if st.button("Run this Blitz again", key=f"b_again_{run_id}", icon=":material/replay:",
                 help="the same settings; the two runs are then compared"):
        ss["b_again"] = run_id
    if ss.get("b_again") != run_id:
        return
    cmd = stored_engine_command(config)
    if cmd:
        st.warning("This run's config launches this command on this machine. Start it only if you trust it:")
        st.code(cmd, language="bash")
        yes, no = st.columns(2)
        if no.button("Cancel", key=f"b_again_no_{run_id}"):
            ss.pop("b_again", None)
            st.rerun()
        if not yes.button("Start it", key=f"b_again_yes_{run_id}", type="primary"):
            return
    ss.pop("b_again", None)
    runs = worker_api()
    if runs is None:
        return
    try:
        again = runs.start_run(RunConfig.model_validate(config))
    except Exception as e:  # noqa: BLE001 - a bad setting or an unwritable history: say it, start nothing
        st.error(f"Blitz not started: {esc_md(e)}")
    else:
        st.query_params["run"] = str(again)
        st.rerun()


@st.fragment(run_every=2.0 if shown.active else None)
def show(run_id: int) -> None:
    d = q.get_run(run_id)
    if d is None:
        st.error("The run is gone.")
        return
    r = d.run
    st.markdown(f"### #{r.id} {esc_md(r.name or r.model)} {sim_badge(r.simulated)} {status_badge(r.status)}")
    st.caption(f"{esc_md(r.engine_kind)} · {esc_md(r.model)} · {esc_md(r.gpu or 'GPU unknown')} · started "
               f"{fmt_dt(r.started_at or r.created_at)}")
    if r.active:
        st.page_link("views/live.py", label="Watch it on Live", icon=":material/monitoring:",
                     query_params={"run": str(r.id)})
        done = [lv for lv in d.levels if lv.status != "running"]
        st.progress(min(1.0, len(done) / max(len(d.levels) + 1, 2)),
                    text=f"{len(d.levels)} level(s) so far: " + ", ".join(
                        f"C={lv.concurrency} {(lv.summary.get('blitz') or {}).get('phase', '')}" for lv in d.levels))
        if not d.levels:
            return
    res = _result(run_id)
    if res is None:
        if not r.active:
            st.error("This Blitz has no result" + (f": {esc_md(r.error)}" if r.error else "."))
        return
    sim = " (SIMULATED)" if res.get("simulated") else ""
    tiles = st.columns([1.3, 1, 1, 1, 1, 1, 1])
    tiles[0].metric("Blitz score" + sim, fmt_rate(res.get("score_output_tok_s")), border=True,
                    help="steady-state output tok/s at the saturating concurrency")
    tiles[1].metric("tok/s per W", fmt_rate(res.get("tok_s_per_w")), border=True)
    tiles[2].metric("J / output token", fmt_small(res.get("j_per_output_token")), border=True)
    tiles[3].metric("TTFT p50 ms", fmt_rate(res.get("ttft_p50_ms")), border=True)
    tiles[4].metric("TPOT p50 ms", fmt_rate(res.get("tpot_p50_ms")), border=True)
    share = res.get("roofline_share")
    tiles[5].metric("Roofline share", "–" if share is None else f"{100 * share:.1f}%", border=True,
                    help="measured tok/s over the catalog's bandwidth/FLOP bound for this batch and context")
    tiles[6].metric("GPU health" + sim, (res.get("health") or {}).get("status") or "unknown", border=True)
    st.caption(f"Score in steady-state output tok/s at concurrency {res.get('concurrency')}"
               + (f", {res['measured_levels']} measured levels agreeing within {100 * res['spread']:.1f}%"
                  if res.get("spread") is not None else "") + sim)
    if res.get("stable") is False:
        st.warning(f"The {res['measured_levels']} measured levels disagree by {100 * res['spread']:.1f}% (more than "
                   f"{100 * AGREEMENT:.0f}%): not a stable score. Is something else loading this machine? "
                   "Run it again below.")
    entries = q.blitz_results()
    mine = next((e for e in entries if e["run_id"] == run_id), None)
    prev = against_previous(mine, entries) if mine else None
    if prev:
        verdict = "agrees" if prev["agree"] else "DISAGREES"
        st.caption(f"Against the previous Blitz of this GPU kind, engine, model and setup (#{prev['run_id']}, "
                   f"{fmt_rate(prev['score_output_tok_s'])} tok/s): {100 * prev['change']:+.1f}%, {verdict} within "
                   f"{100 * AGREEMENT:.0f}%{sim}")
    if not r.active:
        _run_again(run_id, d.config)
    reasons = (res.get("health") or {}).get("reasons") or []
    if reasons:
        st.caption("Health: " + esc_md("; ".join(reasons)))
    dec = (res.get("decision") or {}).get("reason")
    if dec:
        st.caption(f"Search: {esc_md(dec)} (concurrency {res.get('concurrency')})")
    ss = res.get("single_stream")
    if ss:
        if ss.get("output_tok_s") is not None:
            st.info(f"Single-stream (the old method: HF transformers generate, batch 1, on {esc_md(ss.get('device'))}):"
                    f" **{fmt_rate(ss['output_tok_s'])} output tok/s**, against the Blitz score "
                    f"{fmt_rate(res.get('score_output_tok_s'))}{sim}.")
        else:
            st.caption(f"Single-stream method failed: {esc_md(ss.get('error'))}")
    left, right = st.columns([1, 1])
    with left:
        st.subheader("Result")
        rows = result_rows(res)
        st.dataframe(pd.DataFrame(rows, columns=["", "value"]), hide_index=True, key=f"b-res-{run_id}",
                     height=35 * (len(rows) + 1) + 3)
    with right:
        st.subheader("Search" + sim)
        srch = pd.DataFrame(res.get("search") or [])
        if not srch.empty:
            srch["tok_s"] = srch["tok_s"].round(1)
            srch = srch.rename(columns={"tok_s": "output tok/s", "steady": "steady window"})
            show_table(srch, key=f"b-search-{run_id}", filename=f"blitz{run_id}_search")
    tel = pd.DataFrame(q.telemetry_series(run_id))
    if not tel.empty:
        t0 = int(tel["t_ns"].min())
        tel["t_s"] = (tel["t_ns"] - t0) / 1e9
        tel["power_chart_w"] = tel["power_avg_w"].fillna(tel["power_w"]) if "power_avg_w" in tel else tel["power_w"]
        bands = [((lv.start_ns - t0) / 1e9, ((lv.end_ns or lv.start_ns) - t0) / 1e9,
                  f"C={lv.concurrency}" + (" measure" if (lv.summary.get("blitz") or {}).get("phase") == "measure"
                                           else ""))
                 for lv in d.levels if lv.start_ns]
        fig = charts.per_gpu_stacked(tel, [("power_chart_w", "power W (1 s avg)"), ("temp_gpu_c", "temp °C"),
                                           ("sm_clock_mhz", "SM clock MHz")],
                                     "Power, temperature, clocks", simulated=r.simulated, bands=bands)
        show_chart(fig, key=f"b-gpu-{run_id}", filename=f"blitz{run_id}_gpu", data=tel)
    else:
        st.caption("No GPU telemetry recorded for this run.")
    with st.expander("Hardware, driver and engine versions"):
        st.json({"versions": res.get("versions"), "gpus": res.get("gpu_facts"), "host": d.host}, expanded=True)


show(shown.id)
