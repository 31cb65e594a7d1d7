"""Live: one run, in progress or finished. Polls the database once a second while the run is active (the worker
writes, we only read), so a refresh, a second viewer or closing the tab never touches the sweep.

`?present=1` is the presentation view for a projector: no navigation or picker, the headline numbers and two big
live charts. A viewer who watched a run live keeps its charts when it ends (no swap to the Levels table)."""
from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import streamlit as st

from app.ui import charts
from app.ui.common import (download_csv, esc_md, fmt_dt, fmt_num, fmt_secs, show_chart, show_table, sim_badge,
                           sim_error_caption, status_badge, worker_api)
from bench import run_frames
from bench.alerts import alert_counts, level_alert_rows
from bench.compare import picker_labels, run_labels
from bench.repeats import interval_rows, summaries_of
from bench.report import prompt_label
from bench.mix import breakdown, instance_rows, service_rows
from bench.mix import readable as readable_mix
from bench.tables import readable_levels
from storage import queries as q
from storage.db import to_url

# Big tiles, and less empty space above the run so the first chart starts on a 1920x1080 screen
BIG_TILES_CSS = """<style>
[data-testid="stMetricValue"] { font-size: 2.6rem; font-weight: 700; }
[data-testid="stMetricLabel"] p { font-size: 1.1rem; }
[data-testid="stMainBlockContainer"] { padding-top: 4.5rem; }
</style>"""
# Presentation view: no Streamlit header/toolbar, little padding, bigger tiles. Static CSS only.
PRESENT_CSS = """<style>
[data-testid="stHeader"], [data-testid="stToolbar"], [data-testid="stDecoration"] { display: none; }
[data-testid="stMainBlockContainer"] { padding-top: 1.2rem; padding-bottom: 0.5rem; max-width: 100%; }
[data-testid="stMetricValue"] { font-size: 3.6rem; }
</style>"""

ss = st.session_state
present = st.query_params.get("present") == "1"
runs = q.list_runs(limit=300)
if not runs:
    st.title("Live")
    st.info("No runs yet. Start one on the Launch page.")
    st.page_link("views/launch.py", label="Launch a sweep", icon=":material/rocket_launch:")
    st.stop()

asked = st.query_params.get("run")
try:
    run_id = int(asked) if asked else None
except ValueError:
    st.warning(f"?run={esc_md(asked)} is not a run id.")
    run_id = None
if run_id is None:
    run_id = q.latest_run_id(active_only=True) or runs[0].id
labels = picker_labels(runs, live_mark=True)
options = list(labels)
if run_id not in labels:
    options.insert(0, run_id)
pick_col, refresh_col = st.columns([3, 2]) if not present else (None, None)  # present: neither shown
picked = run_id if present else pick_col.selectbox("Run", options, index=options.index(run_id),
                                                    format_func=lambda i: labels.get(i, f"#{i}"))
if picked != run_id or st.query_params.get("run") != str(run_id):
    st.query_params["run"] = str(picked)  # shareable URL: ?run=ID
    if picked != run_id:
        st.rerun()

detail = q.get_run(run_id)
if detail is None:
    st.error(f"Run {run_id} not found.")
    st.stop()
st.html(BIG_TILES_CSS + (PRESENT_CSS if present else ""))  # static CSS only; no user text ever goes through HTML
active_at_load = detail.run.active
if active_at_load:
    ss["_live_watched"] = run_id  # this viewer saw the run live: keep its charts when it ends
# Every chart redraw costs the viewer's browser CPU (~0.1 core per figure at 1 Hz in headless Chromium here); on a
# one-box setup that comes out of the sweep, so the rate is the viewer's choice. 1 s by default.
refresh = None
if active_at_load and present:
    refresh = ss.get("live_refresh", 1.0) or None
elif active_at_load:
    refresh = refresh_col.segmented_control("Refresh", [1.0, 2.0, 5.0, 0.0], default=1.0, key="live_refresh",
                                            format_func=lambda v: f"{v:g} s" if v else "paused") or None


def _planned(d: q.RunDetail) -> tuple[list[tuple[int, int | None]], float | None]:
    from bench.runs import planned_for

    return planned_for(d.config, [(lv.concurrency, lv.n_requested) for lv in d.levels])


def _series(run_id: int) -> q.RunSeries:
    cache = ss.get("live_series")
    if not isinstance(cache, q.RunSeries) or cache.run_id != run_id:
        cache = q.RunSeries(run_id)
        ss["live_series"] = cache
    cache.refresh()
    return cache


def _header(d: q.RunDetail) -> None:
    r = d.run
    # GPU first ("H200 · vLLM · Qwen3-0.6B"); a run's own name, when it has one, follows
    label = run_labels([r], {r.id: d.config})[r.id].removesuffix(" (SIMULATED)")
    title = label + (f" · {r.name}" if r.name else "")
    st.markdown(f"## {esc_md(title)} · #{r.id} &nbsp; {status_badge(r.status)} {sim_badge(r.simulated)}")
    fmt = prompt_label(d.config)
    st.caption(f"{esc_md(r.engine_kind)} · {esc_md(r.model)} · {esc_md(r.gpu or 'GPU ?')} × {r.gpu_count} · "
               + (f"prompts: {esc_md(fmt)} · " if fmt else "")
               + f"created {fmt_dt(r.created_at)}" + (f" · tags: {esc_md(', '.join(r.tags))}" if r.tags else ""))
    if r.simulated:
        st.warning("SIMULATED run: numbers come from Melt's simulator, not a real GPU.", icon=":material/science:")
        sim_error_caption(d)
    if r.error:
        st.error(f"{esc_md(r.status)}: {esc_md(r.error[:600])}")
    if r.active and d.heartbeat_at is not None:
        age = (datetime.now(timezone.utc) - d.heartbeat_at).total_seconds()
        if age > 15:
            st.warning(f"No heartbeat from the worker for {age:.0f} s (it may have died; it will be marked aborted).")


def _cancel(d: q.RunDetail) -> None:
    if not d.run.active:
        return
    if st.button("Cancel run", type="secondary", icon=":material/stop_circle:", key=f"cancel-{d.run.id}"):
        api = worker_api()
        if api is not None:
            try:
                sent = api.cancel_run(d.run.id)
                st.toast("Cancel sent: the worker stops load and engine, keeps results." if sent
                         else "Run already finished.")
            except Exception as e:  # noqa: BLE001
                st.error(f"Cancel failed: {esc_md(e)}")


def _engine(d: q.RunDetail, now: datetime) -> None:
    if not d.instances:
        if d.run.status == "queued" and d.run.target_agent:
            st.info(f"Queued for agent **{esc_md(d.run.target_agent)}**: it starts when that agent takes it.")
        elif d.run.status == "queued":
            st.info("Queued: waiting for the worker to start.")
        elif d.run.agent:
            st.info(f"Taken by agent **{esc_md(d.run.agent)}**: its worker is starting.")
        return
    if len(d.instances) > 1 or d.instances[0].name:  # a deployment: one row per instance, then the starting one
        st.dataframe(pd.DataFrame(instance_rows(d.instances)), hide_index=True, key=f"live-inst-{d.run.id}")
    inst = d.instances[-1]
    ready = inst.ready_at is not None
    if ready and not d.run.active:
        st.caption(f"Engine {esc_md(inst.kind)} {esc_md(inst.version or '')} was ready in {fmt_secs(inst.startup_s)}.")
        return
    if not ready:
        since = inst.launched_at or d.run.started_at
        elapsed = (now - since).total_seconds() if since else None
        st.info(f"Engine starting: **{esc_md(inst.phase or inst.state)}** · {fmt_secs(elapsed)} elapsed")
        st.code(inst.log_tail[-4000:] or "(no output yet)", language="log")
    else:
        st.caption(f"Engine{' ' + esc_md(inst.name) if inst.name else ''} ready in {fmt_secs(inst.startup_s)} · "
                   f"{esc_md(inst.base_url or '')}")


def _progress(d: q.RunDetail, now: datetime) -> None:
    planned, dur = _planned(d)
    p = q.sweep_progress(d, planned, dur, now)
    if not p.levels:
        return
    search = (d.config or {}).get("slo_search")
    if search is not None and d.run.active:  # no known end: the probes so far against the most it can take
        from bench.slo_search import SloSearchSpec, level_budget

        most = level_budget(SloSearchSpec.model_validate(search))
        st.progress(min(1.0, len(d.levels) / most), text=f"SLO search: probe {len(d.levels)} of at most {most} · "
                                                         f"{fmt_secs(p.elapsed_s)} elapsed")
    else:
        eta = "" if p.eta_s is None else f" · ETA ~{fmt_secs(p.eta_s)}"
        st.progress(min(1.0, p.fraction), text=f"Sweep: {p.fraction:.0%} · {fmt_secs(p.elapsed_s)} elapsed{eta}")
    if not d.run.active and all(lv.status == "completed" for lv in p.levels):
        return  # every level done: one bar says it; per-level bars matter while running or when one stopped short
    cols = st.columns(min(len(p.levels), 6))
    for i, lv in enumerate(p.levels):
        with cols[i % len(cols)]:
            total = f"/{lv.total:,}" if lv.total else ""
            st.progress(lv.fraction, text=f"C={lv.concurrency}: {lv.status} {lv.done:,}{total}")


@st.cache_data(max_entries=8, show_spinner="Loading the run's time series…")
def _finished_frames(db_url: str, run_id: int, finished_key: str) -> dict:
    """Chart frames of a finished run (bench.run_frames: one stored row, else the full read, then stored), cached
    per (database, run, finish time), so another history file or a deleted-and-reused id never serves stale data."""
    return run_frames.finished_frames(run_id, db_url)


def _tiles_finished(d: q.RunDetail) -> None:
    """A finished run's headline numbers from its level summaries (no bulk read needed)."""
    sim = " (SIM)" if d.run.simulated else ""
    done = [lv for lv in d.levels if lv.output_tok_s]
    peak = max(done, key=lambda lv: lv.output_tok_s) if done else None
    power = (peak.telemetry or {}).get("avg_power_w") if peak else None
    temps = [t for t in ((lv.telemetry or {}).get("peak_temp_gpu_c") for lv in d.levels) if t is not None]
    a, b, c, e = st.columns(4)
    a.metric(f"Peak output tok/s{sim}", fmt_num(d.run.peak_output_tok_s, 0),
             help=f"Level C={peak.concurrency}" if peak else None, border=True)
    b.metric(f"Power at peak{sim}", f"{fmt_num(power, 0)} W" if power is not None else "–",
             help="Average over the peak level (energy / time)", border=True)
    c.metric(f"Hottest GPU{sim}", f"{fmt_num(max(temps), 0)} °C" if temps else "–", border=True)
    e.metric("Failed requests", f"{sum(lv.n_err for lv in d.levels):,}", border=True)


def _tiles(d: q.RunDetail, f: dict) -> None:
    tok_now, src = None, ""
    if not f["eng_rate"].empty:
        tok_now, src = f["eng_rate"]["rate"].tail(3).mean(), "engine counter"
    elif not f["thr"].empty:
        tok_now, src = f["thr"]["output_tok_s"].dropna().tail(3).mean(), "completed requests"
    tel = f["tel"]
    power = temp = None
    if not tel.empty:
        last = tel.sort_values("t_ns").groupby("gpu_index").tail(1)
        power = last["power_avg_w"].fillna(last["power_w"]).sum(min_count=1)
        temp = last["temp_gpu_c"].max()
    errs = sum(lv.n_err for lv in d.levels)
    sim = " (SIM)" if d.run.simulated else ""
    a, b, c, e = st.columns(4)
    a.metric(f"Output tok/s{sim}", fmt_num(tok_now, 0), help=f"From the {src}" if src else None, border=True)
    b.metric(f"GPU power{sim}", f"{fmt_num(power, 0)} W" if power == power and power is not None else "–",
             help="Sum over the run's GPUs, latest sample", border=True)
    c.metric(f"GPU temp{sim}", f"{fmt_num(temp, 0)} °C" if temp == temp and temp is not None else "–",
             help="Hottest GPU, latest sample", border=True)
    e.metric("Failed requests", f"{errs:,}", border=True)


def _tok_fig(d: q.RunDetail, f: dict, height: int):
    return charts.lines(f["thr"], "t_s", {"client (completed requests)": "output_tok_s", "engine counter": "engine_tok_s"},
                        "Output tokens/s", simulated=d.run.simulated, xlab="seconds since start", ylab="tok/s",
                        bands=f["bands"], height=height)


def _lat_fig(d: q.RunDetail, f: dict, panel_height: int):
    lat = f["lat"]
    return charts.stacked([(lat, {"TTFT p50": "ttft_p50", "TTFT p99": "ttft_p99"}, "TTFT ms"),
                           (lat, {"ITL p50": "itl_p50", "ITL p99": "itl_p99"}, "ITL ms")], "t_s",
                          "Latency: TTFT and inter-token (per-request mean)", simulated=d.run.simulated,
                          xlab="seconds since start", dash={"TTFT p99": "dash", "ITL p99": "dash"}, bands=f["bands"],
                          panel_height=panel_height)


def _load_charts(d: q.RunDetail, f: dict) -> None:
    """Three figures (two of them stacked panels): each figure costs the browser ~0.1 CPU core per redraw at 1 Hz,
    and on a one-box setup that CPU comes out of the sweep being watched."""
    sim = d.run.simulated
    thr, lat, em, bands = f["thr"], f["lat"], f["em"], f["bands"]
    rid = d.run.id
    xs = "seconds since start"
    a, b = st.columns(2)
    with a:
        show_chart(_tok_fig(d, f, 450), key=f"live-tok-{rid}", filename=f"run{rid}_output_tok_s", data=thr)
    with b:
        show_chart(_lat_fig(d, f, 190), key=f"live-lat-{rid}", filename=f"run{rid}_latency", data=lat)
    a, b = st.columns(2)
    with a:
        # requests and % on separate axes; the failed panel only when something failed (a flat zero says nothing)
        panels = [(em, {"running": "running", "waiting": "waiting"}, "requests"),
                  (em, {"KV cache %": "kv_cache_pct"}, "KV cache %")]
        if not thr.empty and thr["errors"].sum() > 0:
            panels.append((thr, {"failed per bucket": "errors", "failed (cumulative)": "errors_cumulative"}, "failed"))
        fig = charts.stacked(panels, "t_s", "Engine queue, KV cache" + (" and errors" if len(panels) > 2 else ""),
                             simulated=sim, xlab=xs, bands=bands, panel_height=150)
        show_chart(fig, key=f"live-queue-{rid}", filename=f"run{rid}_engine_queue", data=em)
    with b:
        errs = q.error_breakdown(d.run.id)
        if errs:
            st.markdown("**Errors by level, status and message**")
            show_table(pd.DataFrame(errs), key=f"live-errs-{d.run.id}", filename=f"run{d.run.id}_errors")
        else:
            st.caption("No failed requests.")


def _gpu_charts(d: q.RunDetail, f: dict) -> None:
    sim, tel, rid = d.run.simulated, f["tel"], d.run.id
    if tel.empty:
        st.info("No GPU telemetry recorded for this run.")
        return
    fig = charts.per_gpu_stacked(tel, [("util_gpu", "util %"), ("power_chart_w", "power W (1 s avg)"),
                                       ("temp_gpu_c", "temp °C"), ("mem_used_gb", "memory GiB"),
                                       ("sm_clock_mhz", "SM clock MHz")],
                                 "GPU utilization, power, temperature, memory, clocks", simulated=sim,
                                 bands=f["bands"])
    show_chart(fig, key=f"live-gpu-{rid}", filename=f"run{rid}_gpu", data=tel)


def _levels(d: q.RunDetail) -> None:
    rows = q.level_table(d)
    if not rows:
        st.caption("No level has started yet.")
        return
    head, toggle = st.columns([4, 1])
    head.subheader("Levels" + (" — SIMULATED" if d.run.simulated else ""))
    df = pd.DataFrame(rows)
    if toggle.toggle("All columns", key=f"live-levels-all-{d.run.id}", help="Every figure stored per level, raw"):
        show_table(df, key=f"live-levels-{d.run.id}", filename=f"run{d.run.id}_levels")
    else:  # the columns people read, units in the headers; the CSV keeps every column and full precision
        st.dataframe(pd.DataFrame(readable_levels(rows)), key=f"live-levels-view-{d.run.id}", hide_index=True)
        download_csv(df, f"run{d.run.id}_levels.csv", key=f"live-levels-{d.run.id}-csv")
    st.caption("Whole-level figures follow vllm bench serve; the steady columns are the steady-state window's (every user "
               "busy: ramp-up and drain left out).")
    mix = breakdown(summaries_of(d.levels), d.run.gpu_count or 1, d.run.price_per_gpu_hour)
    if mix:
        st.markdown("**Per instance and whole box**" + (" — SIMULATED" if d.run.simulated else ""))
        st.dataframe(pd.DataFrame(readable_mix(mix)), hide_index=True, key=f"live-mix-{d.run.id}")
        download_csv(pd.DataFrame(mix), f"run{d.run.id}_instances.csv", key=f"live-mix-{d.run.id}-csv")
        st.caption("Instance rates are over the level's wall time, so they add up to the box's; $ per 1M output "
                   "tokens is the whole box's (every GPU at the run's price).")
    svc = service_rows(summaries_of(d.levels))
    if svc:
        st.markdown("**Services: their own traffic during each level**")
        st.dataframe(pd.DataFrame(readable_mix(svc)), hide_index=True, key=f"live-svc-{d.run.id}")
        download_csv(pd.DataFrame(svc), f"run{d.run.id}_services.csv", key=f"live-svc-{d.run.id}-csv")
        st.caption("Each service's recipe request at its steady Poisson rate, beside the LLM load and not in its "
                   "figures; every arrival is counted: ok, an error, or behind (over its max in flight).")
    reps = interval_rows(summaries_of(d.levels))
    if reps and any(r["repeats"] > 1 for r in reps):
        st.markdown("**Across repeats: mean ± 95% confidence interval (Student t)**")
        show_table(pd.DataFrame(reps), key=f"live-repeats-{d.run.id}", filename=f"run{d.run.id}_repeats")
    done = df[df["status"] == "completed"]
    if (d.config or {}).get("slo_search"):  # probes run out of order (2, 4, 8, 6, 7): draw them by concurrency
        done = done.sort_values("concurrency", kind="stable")
    if len(done) >= 2:
        a, b = st.columns(2)
        label = run_labels([d.run], {d.run.id: d.config})[d.run.id]
        with a:
            show_chart(charts.by_concurrency([(label, done)], "output_tok_s", "Output tok/s vs concurrency", "tok/s",
                                             simulated=d.run.simulated),
                       key=f"live-lvl-tok-{d.run.id}", filename=f"run{d.run.id}_tok_vs_conc")
        with b:
            show_chart(charts.by_concurrency([(label, done)], "ttft_p50_ms", "TTFT p50 (solid) / p99 (dashed)", "ms",
                                             simulated=d.run.simulated, dash_col="ttft_p99_ms"),
                       key=f"live-lvl-ttft-{d.run.id}", filename=f"run{d.run.id}_ttft_vs_conc")


def _alerts(d: q.RunDetail) -> None:
    """Alerts firing now (the worker's latest "alerts" event, while the run is active), the finished levels' alert
    count, and the SLO search's state when the run is one."""
    evs = q.events(d.run.id, kinds=("alerts", "slo_search"), limit=50)
    latest = next((e for e in reversed(evs) if e.kind == "alerts"), None)
    search = next((e for e in reversed(evs) if e.kind == "slo_search"), None)
    if d.run.active and latest is not None and (latest.payload or {}).get("alerts"):
        for a in latest.payload["alerts"]:
            text = f"**{esc_md(a.get('severity', '').upper())}** · {esc_md(a.get('message', ''))} (live, last 10 s)"
            (st.error if a.get("severity") == "critical" else st.warning)(text, icon=":material/notifications_active:")
    rows = level_alert_rows([(lv.idx, lv.concurrency, lv.summary) for lv in d.levels if lv.summary])
    if rows:
        st.caption(f"Level alerts: {esc_md(alert_counts(rows))} (thresholds stored with the run; see Levels)")
    if search is not None:
        st.info(esc_md(search.message), icon=":material/target:")
    elif (d.config or {}).get("slo_search"):
        probes = [(lv.concurrency if lv.request_rate is None else lv.request_rate, lv.summary["slo_search"]["meets"])
                  for lv in d.levels if (lv.summary or {}).get("slo_search")]
        passed = [v for v, ok in probes if ok]
        st.info(f"SLO search: {len(probes)} probe(s) so far"
                + (f", highest meeting the limits {max(passed):g}" if passed else ""), icon=":material/target:")


def _level_alerts(d: q.RunDetail) -> None:
    rows = level_alert_rows([(lv.idx, lv.concurrency, lv.summary) for lv in d.levels if lv.summary])
    if rows:
        st.markdown("**Alerts per level**")
        show_table(pd.DataFrame(rows), key=f"live-alerts-{d.run.id}", filename=f"run{d.run.id}_alerts")


def _events(d: q.RunDetail) -> None:
    for inst in d.instances:
        st.markdown(f"**Engine {esc_md(inst.kind)}** {esc_md(inst.version or '')} · state {esc_md(inst.state)}"
                    + (f" · exit code {inst.exit_code}" if inst.exit_code is not None else ""))
        st.code(" ".join(str(a) for a in inst.argv) or "(no argv)", language="bash", wrap_lines=True)
        st.code(inst.log_tail[-6000:] or "(empty log)", language="log")
    evs = q.events(d.run.id, limit=200)
    if evs:
        df = pd.DataFrame([{"time": datetime.fromtimestamp(e.t_ns / 1e9, timezone.utc).strftime("%H:%M:%S"),
                            "kind": e.kind, "message": e.message[:500]} for e in evs])
        show_table(df, key=f"live-events-{d.run.id}", filename=f"run{d.run.id}_events")


@st.fragment(run_every=refresh)
def live_view(run_id: int) -> None:
    d = q.get_run(run_id)
    if d is None:
        st.error(f"Run {run_id} was deleted.")
        return
    if d.run.active != active_at_load:
        st.rerun()  # started/finished since the page loaded: a full rerun switches polling on/off
    if d.run.active and (runs := worker_api()) is not None and run_id in runs.reap_stale():
        st.rerun()  # its worker died while we watched (SIGKILL, OOM kill): now `aborted`, engines ended
    now = datetime.now(timezone.utc)
    if present:
        _present(d, now)
        return
    _header(d)
    _cancel(d)
    _engine(d, now)
    _progress(d, now)
    _alerts(d)
    tabs = ["Throughput & latency", "GPUs", "Levels", "Engine log & events"]
    if d.run.active:
        frames = _series_frames(d)
        _tiles(d, frames)
    else:
        frames = None  # loaded only if a chart tab is opened: a finished run opens on its level summary
        _tiles_finished(d)
    # Lazy tabs: only the open tab's content runs (and is sent to the browser) on each refresh. A run opened
    # finished starts on its Levels; one this viewer watched live keeps the tab (and charts) it was watching.
    watching = d.run.active or ss.get("_live_watched") == d.run.id
    load, gpus, levels, log = st.tabs(tabs, key=f"live-tab-{'active' if watching else 'done'}", on_change="rerun",
                                      default=tabs[0] if watching else tabs[2])
    if load.open or gpus.open:
        frames = frames or _series_frames(d)
    if load.open:
        with load:
            _load_charts(d, frames)
    if gpus.open:
        with gpus:
            _gpu_charts(d, frames)
    if levels.open:
        with levels:
            _levels(d)
            _level_alerts(d)
    if log.open:
        with log:
            _events(d)


def _present(d: q.RunDetail, now: datetime) -> None:
    """The projector view: one title line, the sweep's progress, the headline tiles, two big charts."""
    r = d.run
    label = run_labels([r], {r.id: d.config})[r.id].removesuffix(" (SIMULATED)")
    st.markdown(f"### {esc_md(label + (f' · {r.name}' if r.name else ''))} &nbsp; {status_badge(r.status)} "
                f"{sim_badge(r.simulated)}")
    planned, dur = _planned(d)
    p = q.sweep_progress(d, planned, dur, now)
    if p.levels:
        running = next((lv for lv in p.levels if lv.status == "running"), None)
        where = f" · C={running.concurrency:,} running" if running else ""
        st.progress(min(1.0, p.fraction), text=f"Sweep: {p.fraction:.0%} · {fmt_secs(p.elapsed_s)} elapsed{where}")
    frames = _series_frames(d)
    if r.active:
        _tiles(d, frames)
    else:
        _tiles_finished(d)
    a, b = st.columns(2)
    with a:
        show_chart(_tok_fig(d, frames, 470), key=f"present-tok-{r.id}", filename=f"run{r.id}_output_tok_s")
    with b:
        show_chart(_lat_fig(d, frames, 200), key=f"present-lat-{r.id}", filename=f"run{r.id}_latency")


def _series_frames(d: q.RunDetail) -> dict:
    if d.run.active:
        return run_frames.frames(_series(d.run.id), d)
    # finished: the frames never change again, so one read serves every viewer and refresh
    return _finished_frames(to_url(None), d.run.id, d.run.finished_at.isoformat() if d.run.finished_at else d.run.status)


live_view(run_id)
if present:
    st.page_link("views/live.py", label="Leave the presentation view", icon=":material/close_fullscreen:",
                 query_params={"run": str(run_id)})
    st.stop()
st.divider()
a, b, c, e = st.columns(4)
e.page_link("views/live.py", label="Presentation view", icon=":material/present_to_all:",
            query_params={"run": str(run_id), "present": "1"})
a.page_link("views/cost.py", label="Cost of this run", icon=":material/payments:", query_params={"run": str(run_id)})
b.page_link("views/compare.py", label="Compare with others", icon=":material/compare_arrows:",
            query_params={"runs": str(run_id)})
c.page_link("views/launch.py", label="Open these settings in Launch", icon=":material/tune:",
            query_params={"from": str(run_id)})
