"""GPUs: live state and health of the detected GPUs (NVML), or the latest recorded (simulated) samples when there is
no GPU, plus the last runs' health verdicts."""
from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import streamlit as st

from app.ui.common import detected_gpus, esc_md, fmt_dt, gpu_catalog, page_header, show_table
from bench.compare import run_labels, short_gpu
from storage import queries as q

page_header("GPUs")
gpus, line = detected_gpus()
st.caption(esc_md(line))


def _tiles(rows: list[dict], simulated: bool, model: str | None = None) -> None:
    sim = " (SIMULATED)" if simulated else ""
    for row in rows:
        name = f" · {esc_md(model)}" if model else ""
        st.markdown(f"**GPU {row.get('gpu_index')}{name}**{sim}")
        a, b, c, d, e = st.columns(5)
        f = lambda v, unit, nd=0: "–" if v is None else f"{v:,.{nd}f} {unit}"  # noqa: E731
        a.metric("Utilization", f(row.get("util_gpu"), "%"), border=True)
        power = row.get("power_avg_w") if row.get("power_avg_w") is not None else row.get("power_w")
        b.metric("Power", f(power, "W"), border=True)
        c.metric("Temperature", f(row.get("temp_gpu_c"), "°C"), border=True)
        used, total = row.get("mem_used_mb"), row.get("mem_total_mb")
        d.metric("Memory", "–" if used is None else f"{used / 1024:,.1f} / {(total or 0) / 1024:,.0f} GiB", border=True)
        e.metric("SM clock", f(row.get("sm_clock_mhz"), "MHz"), border=True)


if gpus:
    show_table(pd.DataFrame([{k: v for k, v in g.items() if k != "mig_devices"} for g in gpus]), key="g-list",
               filename="gpus_detected")

    @st.fragment(run_every=2.0)
    def live_gpus() -> None:
        try:
            from telemetry.nvml import read_sample
        except Exception as e:  # noqa: BLE001
            st.error(f"Telemetry not available: {esc_md(e)}")
            return
        for g in gpus:
            _tiles([read_sample(g["index"]) | {"gpu_index": g["index"]}], simulated=False, model=g.get("name"))

    st.subheader("Now")
    live_gpus()
    with st.expander("Health facts (ECC, remapped rows, throttling counters)"):
        try:
            from telemetry.nvml import health_facts

            st.json({str(g["index"]): health_facts(g["index"]) for g in gpus}, expanded=False)
        except Exception as e:  # noqa: BLE001
            st.caption(f"not available: {esc_md(e)}")
else:
    st.info("No NVIDIA GPU is visible here. Below: the latest telemetry Melt recorded (from the simulator when "
            "runs were simulated).")
    latest = q.latest_gpu_samples()
    if latest:
        sim = any(x.get("simulated") for x in latest)
        st.subheader(f"Latest samples, run #{latest[0]['run_id']}" + (" — SIMULATED" if sim else ""))
        run = q.get_run(latest[0]["run_id"])
        if run is not None:
            when = max(x["t_ns"] for x in latest) / 1e9
            st.caption(f"{esc_md(run_labels([run.run], {run.run.id: run.config})[run.run.id])} · last sample "
                       f"{fmt_dt(datetime.fromtimestamp(when, timezone.utc))}"
                       + (" (the run has ended: its last sample, not the GPU now)" if not run.run.active else ""))
        _tiles(latest, simulated=sim, model=short_gpu(run.run.gpu) if run is not None else None)
    else:
        st.caption("No telemetry recorded yet.")

st.subheader("Last runs' health verdicts")
verdicts = q.recent_verdicts(limit=15)
if verdicts:
    rows = []
    for v in verdicts:
        head, _, why = (v["verdict"] or "–").partition(": ")
        others = [x for x in dict.fromkeys(v["details"]) if x != v["verdict"]]  # each distinct verdict once
        rows.append({"run": v["run_id"], "name": v["name"], "GPU": f"{v['gpu'] or '?'} × {v['gpu_count']}",
                     "data": "SIMULATED" if v["simulated"] else "measured", "status": v["status"],
                     "finished": fmt_dt(v["finished_at"]), "verdict": head, "why": why or "–",
                     "other levels": " | ".join(others) or "–"})
    show_table(pd.DataFrame(rows), key="g-verdicts", filename="gpu_verdicts",
               column_config={"why": st.column_config.TextColumn(width="large"),
                              "other levels": st.column_config.TextColumn(width="medium")})
else:
    st.caption("No finished runs yet.")

cat, err = gpu_catalog()
with st.expander("GPU catalog"):
    if cat:
        show_table(pd.DataFrame([g.model_dump(exclude={"sources", "nvml_names"}) for g in cat.values()]),
                   key="g-catalog", filename="gpu_catalog")
    else:
        st.caption(f"Catalog not available: {esc_md(err)}")
