"""Runs: the history. Search and filter, edit name/tags/notes, delete with confirmation, run again; export selected
runs (bundle or HTML report) and import a bundle (app/ui/share.py)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app.ui.common import download_csv, esc_md, gpu_catalog, page_header, worker_api
from app.ui.share import import_box, share_buttons
from bench.config import stored_engine_command
from storage import queries as q

page_header("Runs", "Every sweep, from the dashboard or the CLI. Select rows to open, compare, edit or delete.")
ss = st.session_state

facets = q.run_facets()
with st.container(border=True):
    a, b, c = st.columns([3, 2, 2])
    search = a.text_input("Search", placeholder="name, model, GPU, engine, tag, notes or #id", key="r_search")
    statuses = b.multiselect("Status", facets["statuses"], key="r_status")
    engines = c.multiselect("Engine", facets["engines"], key="r_engine")
    d, e, f, g = st.columns([2, 2, 2, 2])
    gpus = d.multiselect("GPU", facets["gpus"], key="r_gpu")
    models = e.multiselect("Model", facets["models"], key="r_model")
    tags = f.multiselect("Tags (all of)", facets["tags"], key="r_tags")
    kind = g.segmented_control("Source", ["all", "measured", "simulated"], default="all", key="r_kind")

import_box()

sim_filter = {"measured": False, "simulated": True}.get(kind or "all")
runs = q.list_runs(search=search or None, statuses=statuses or None, engines=engines or None, gpus=gpus or None,
                   models=models or None, tags=tags or None, simulated=sim_filter)

if not runs:
    st.info("No runs match." if any([search, statuses, engines, gpus, models, tags, sim_filter is not None])
            else "No runs yet: start one on the Launch page, or `./melt sweep --engine sim ...` from a terminal.")
    st.stop()

df = pd.DataFrame([{
    "id": r.id, "name": r.name, "created (UTC)": r.created_at.strftime("%Y-%m-%d %H:%M"),
    "GPU": f"{r.gpu or '?'} × {r.gpu_count}", "engine": r.engine_kind, "model": r.model,
    "peak tok/s": r.peak_output_tok_s, "best goodput req/s": r.best_goodput_req_s, "status": r.status,
    "data": (f"{r.projection_label} (SIMULATED)" if r.projection else
             "SIMULATED" if r.simulated else "measured"), "tags": ", ".join(r.tags), "notes": r.notes,
} for r in runs])
st.caption(f"{len(runs)} run(s)")
event = st.dataframe(
    df, key=f"r_table_{ss.get('r_table_v', 0)}", hide_index=True, on_select="rerun", selection_mode="multi-row",
    column_config={
        "peak tok/s": st.column_config.NumberColumn(format="%.0f"),
        "best goodput req/s": st.column_config.NumberColumn(format="%.2f"),
        "id": st.column_config.NumberColumn(width="small"),
    })
download_csv(df, "melt_runs.csv", key="r_csv")

chosen_rows = event.selection.rows if event is not None else []
chosen = [runs[i] for i in chosen_rows if i < len(runs)]
if not chosen:
    st.caption("Select one or more rows for actions.")
    st.stop()

st.subheader(f"{len(chosen)} selected: " + ", ".join(f"#{r.id}" for r in chosen))
a, b, c, d = st.columns(4)
first = chosen[0]
a.page_link("views/live.py", label=f"Open #{first.id}", icon=":material/monitoring:", query_params={"run": str(first.id)})
if 2 <= len(chosen) <= 6:
    b.page_link("views/compare.py", label="Compare selected", icon=":material/compare_arrows:",
                query_params={"runs": ",".join(str(r.id) for r in chosen)})
else:
    b.caption("Select 2–6 runs to compare.")
c.page_link("views/cost.py", label=f"Cost of #{first.id}", icon=":material/payments:",
            query_params={"run": str(first.id)})
d.page_link("views/launch.py", label=f"Edit #{first.id}'s settings in Launch", icon=":material/tune:",
            query_params={"from": str(first.id)})

share_buttons([r.id for r in chosen])

if len(chosen) == 1:
    r = first
    with st.form(f"r_edit_{r.id}"):
        st.markdown(f"**Edit run #{r.id}**")
        name = st.text_input("Name", value=r.name, max_chars=200)
        tag_text = st.text_input("Tags (comma-separated)", value=", ".join(r.tags))
        notes = st.text_area("Notes", value=r.notes, height=100)
        if st.form_submit_button("Save"):
            q.update_run_meta(r.id, name=name, tags=tag_text.split(","), notes=notes)
            st.toast(f"Saved run #{r.id}")
            st.rerun()

    def _start_again(config: dict) -> None:
        api = worker_api()
        if api is None:
            return
        try:
            from bench.config import RunConfig

            new_id = api.start_run(RunConfig.model_validate(config))
        except Exception as e:  # noqa: BLE001
            st.error(f"Could not start: {esc_md(e)}")
        else:
            ss.pop("r_again_confirm", None)
            st.switch_page("views/live.py", query_params={"run": str(new_id)})

    clicked = st.button("Run again with this config", icon=":material/replay:", key=f"r_again_{r.id}")
    if clicked or ss.get("r_again_confirm") == r.id:
        detail = q.get_run(r.id)  # only now: it reads every level of the run
        stored_cmd = stored_engine_command(detail.config) if detail is not None else None
        if clicked and detail:
            if stored_cmd:
                # A history file may come from someone else: a stored engine command is code this machine would
                # run. Show it and ask first.
                ss["r_again_confirm"] = r.id
            else:
                _start_again(detail.config)
        if ss.get("r_again_confirm") == r.id and stored_cmd and detail:
            st.warning("This run's config launches this command on this machine. Start it only if you trust it:")
            st.code(stored_cmd, language="bash")
            yes, no = st.columns(2)
            if yes.button("Start it", key="r_again_yes", type="primary"):
                _start_again(detail.config)
            if no.button("Cancel", key="r_again_no"):
                ss.pop("r_again_confirm", None)
                st.rerun()

    # Projection (bench/project.py): a measured vLLM run onto other catalog GPUs, stored as simulated runs.
    if not r.simulated and r.status == "completed":
        with st.expander("Project onto other GPUs (SIMULATED)", icon=":material/science:"):
            from bench.project import ProjectionError, load_source, project, save_projection, table

            try:
                source = load_source(r.id)
            except ProjectionError as e:
                st.caption(f"Cannot project this run: {esc_md(e)}")
            else:
                cat, _ = gpu_catalog()
                st.caption("The simulator's host constants (engine loop, request path) are fitted to this run's "
                           f"{len(source.levels)} level(s) on {esc_md(source.gpu)}, then the GPU is swapped. Each "
                           "target is stored as a SIMULATED run with its expected error. The fit takes from "
                           "seconds to a few minutes: it simulates every measured request of every level many times.")
                targets = st.multiselect("Target GPUs", [g for g in cat if g != source.gpu], key=f"r_proj_{r.id}")
                if st.button("Project", key=f"r_proj_go_{r.id}", disabled=not targets, type="primary"):
                    with st.spinner(f"Fitting run #{r.id} and projecting to {len(targets)} GPU(s)…"):
                        try:
                            proj = project(r.id, targets)
                            made = save_projection(proj)
                        except ProjectionError as e:
                            st.error(f"Could not project: {esc_md(e)}")
                        else:
                            ss[f"r_proj_done_{r.id}"] = (table(proj), made)
                if done := ss.get(f"r_proj_done_{r.id}"):
                    md, made = done
                    st.markdown(md)
                    st.page_link("views/compare.py", label="Compare the measured run with its projections",
                                 icon=":material/compare_arrows:",
                                 query_params={"runs": ",".join(map(str, [r.id, *made.values()][:6]))})

# Delete: two steps, so a stray click never loses history.
ids = [r.id for r in chosen]
active = [r.id for r in chosen if r.active]
if ss.get("r_confirm_delete") != ids:
    if st.button(f"Delete {len(ids)} run(s)…", icon=":material/delete:", key="r_delete"):
        ss["r_confirm_delete"] = ids
        st.rerun()
else:
    st.warning(f"Delete run(s) {', '.join(f'#{i}' for i in ids)} and all their data? This cannot be undone."
               + (f" Active runs {active} are skipped: cancel them first." if active else ""))
    y, n = st.columns(2)
    if y.button("Yes, delete", type="primary", key="r_delete_yes"):
        deleted = [i for i in ids if i not in active and q.delete_run(i)]
        ss.pop("r_confirm_delete", None)
        ss["r_table_v"] = ss.get("r_table_v", 0) + 1  # fresh table widget: the old selection pointed at deleted rows
        st.toast(f"Deleted {len(deleted)} run(s)")
        st.rerun()
    if n.button("Keep them", key="r_delete_no"):
        ss.pop("r_confirm_delete", None)
        st.rerun()
