"""A run's chart frames for the Live page (pure: rows in, DataFrames out), and a finished run's frames stored once.

`frames` turns a run's bulk series (storage.queries.RunSeries) into the DataFrames the Live charts draw, times as
seconds since the run started, a few hundred points per line. A finished run's frames never change, so they are
stored in `run_charts` (migration 0008) by the worker at the run's end, or on the first view of a run that has none:
a first viewer then reads one small row instead of every request, telemetry and engine-metric row (~0.8 s for a
100k-request run on the 2-core machine). The frames are the same either way (tests/unit/test_run_frames.py).
"""
from __future__ import annotations

import json
import logging

import pandas as pd

from storage import queries as q

log = logging.getLogger(__name__)

# Bump when `frames` changes what it returns: stored frames of another version are made again.
VERSION = 1
_TABLES = ("thr", "lat", "tel", "em", "eng_rate")


def frames(series: q.RunSeries, d: q.RunDetail) -> dict:
    """DataFrames for the charts, times as seconds since the run started, at most a few hundred points per line
    (the browser redraws every chart each second while a run is live)."""
    start = d.run.started_at or d.run.created_at
    t0 = int(start.timestamp() * 1e9)
    pts = series.requests
    last_done = float(q.completion_ns(pts).max()) if pts["send_ns"].size else None
    span = (last_done - t0) / 1e9 if last_done else 0.0
    bucket = max(1.0, span / 240)
    thr = pd.DataFrame(q.throughput_series(pts, bucket_s=bucket, t0_ns=t0))
    lat = pd.DataFrame(q.latency_series(pts, bucket_s=max(2.0, bucket * 2), t0_ns=t0))
    tel = pd.DataFrame(series.telemetry)
    if not tel.empty:
        tel["t_s"] = (tel["t_ns"] - t0) / 1e9
        tel["mem_used_gb"] = tel["mem_used_mb"] / 1024
        # The driver's ~1 s average: smooth, where 4 Hz instantaneous readings alias the ripple (docs/ARCHITECTURE.md,
        # Telemetry). Instantaneous where no average is offered.
        tel["power_chart_w"] = tel["power_avg_w"].fillna(tel["power_w"])
        tel_bucket = max(0.25, (tel["t_s"].max() - tel["t_s"].min()) / 400)
        if tel_bucket > 0.25:  # long runs: mean per time bucket and GPU, ~400 points per line
            tel = (tel.assign(_b=(tel["t_s"] // tel_bucket)).groupby(["gpu_index", "_b"], as_index=False)
                   .mean(numeric_only=True).drop(columns="_b"))
    em = pd.DataFrame(series.engine)
    eng_rate = pd.DataFrame(q.counter_rate(series.engine["t_ns"], series.engine["generation_tokens_total"],
                                           min_dt_s=max(1.0, bucket)))
    for df in (em, eng_rate):
        if not df.empty:
            df["t_s"] = (df["t_ns"] - t0) / 1e9
    if not em.empty:
        em["kv_cache_pct"] = em["kv_cache_usage"] * 100
        if len(em) > 600:
            em = em.iloc[:: len(em) // 400 + 1]
    if not thr.empty:
        thr["t_s"] += bucket / 2  # plot each bucket at its middle: lines up with the engine counter's rate
        thr["errors_cumulative"] = thr["errors"].cumsum()
        if d.run.active and pts["e2e_ms"].size:
            # Requests still streaming are not in the database yet, so the newest buckets read low. Blank the
            # last median-E2E of the client curve rather than draw a dip that is not real.
            recent = pts["e2e_ms"][-200:]
            hide_after = (last_done - t0) / 1e9 - float(pd.Series(recent).median(skipna=True) or 0) / 1e3
            thr.loc[thr["t_s"] > hide_after, "output_tok_s"] = float("nan")
        if not eng_rate.empty:
            thr = pd.merge_asof(thr.sort_values("t_s"),
                                eng_rate[["t_s", "rate"]].rename(columns={"rate": "engine_tok_s"}),
                                on="t_s", direction="nearest", tolerance=bucket * 2)
    bands = []
    for lv in d.levels:
        if lv.start_ns:
            end = lv.end_ns or last_done or lv.start_ns
            bands.append(((lv.start_ns - t0) / 1e9, (end - t0) / 1e9, f"C={lv.concurrency}"))
    return {"thr": thr, "lat": lat, "tel": tel, "em": em, "eng_rate": eng_rate, "bands": bands}


def dumps(f: dict) -> str:
    """Frames -> JSON text (NaN kept as NaN, int64 ns times exact)."""
    out = {name: {"columns": [str(c) for c in f[name].columns],
                  "data": {str(c): f[name][c].tolist() for c in f[name].columns}} for name in _TABLES}
    out["bands"] = [list(b) for b in f["bands"]]
    return json.dumps(out, separators=(",", ":"))


def loads(text: str) -> dict:
    raw = json.loads(text)
    f: dict = {name: pd.DataFrame(raw[name]["data"], columns=raw[name]["columns"]) for name in _TABLES}
    f["bands"] = [tuple(b) for b in raw["bands"]]
    return f


def compute(run_id: int, db=None) -> dict | None:
    """Frames from every stored row of the run (the full read)."""
    d = q.get_run(run_id, db)
    if d is None:
        return None
    series = q.RunSeries(run_id)
    series.refresh(db)
    return frames(series, d)


def store(run_id: int, db=None) -> dict | None:
    """Compute a finished run's frames and store them (the worker calls this at the run's end)."""
    d = q.get_run(run_id, db)
    if d is None or d.run.active:
        return None
    f = compute(run_id, db)
    q.save_run_charts(run_id, VERSION, d.run.finished_at, dumps(f), db)
    return f


def finished_frames(run_id: int, db=None) -> dict | None:
    """A finished run's frames: the stored row when it matches this run's finished_at and VERSION, else the full
    read, stored for the next viewer (best effort: a read-only history still shows its charts)."""
    d = q.get_run(run_id, db)
    if d is None:
        return None
    text = q.load_run_charts(run_id, VERSION, d.run.finished_at, db)
    if text is not None:
        return loads(text)
    f = compute(run_id, db)
    if not d.run.active:
        try:
            q.save_run_charts(run_id, VERSION, d.run.finished_at, dumps(f), db)
        except Exception as e:  # noqa: BLE001 - the charts are shown anyway; the next viewer reads again
            log.warning("could not store the chart frames of run %s: %s", run_id, e)
    return f
