"""The Runs page's sharing controls: download selected runs as an export bundle or a self-contained HTML report,
and import a bundle. Layout only; the work is storage.bundle (export / validated import) and bench.html_report.

Files are built on request (a button), not on every rerun: a bundle of big runs or a report (~5 MB of Plotly)
would otherwise be rebuilt and resent each time the page redraws.
"""
from __future__ import annotations

import streamlit as st

from app.ui.common import esc_md


def _prepared(kind: str, ids: list[int], build) -> bytes | None:
    """Bytes built by `build` once the user asked for them, kept while the same runs stay selected."""
    key = f"r_share_{kind}"
    held = st.session_state.get(key)
    if held and held[0] == ids:
        return held[1]
    if st.button(f"Prepare {'export bundle' if kind == 'bundle' else 'HTML report'}", key=f"{key}_make",
                 icon=":material/package_2:" if kind == "bundle" else ":material/description:"):
        try:
            with st.spinner("Building…"):
                data = build(ids)
        except (LookupError, ValueError) as e:  # BundleError is a ValueError: e.g. a run still running
            st.error(esc_md(e))
            return None
        st.session_state[key] = (ids, data)
        return data
    return None


def share_buttons(ids: list[int]) -> None:
    """Two download buttons for the selected runs (each after a Prepare click)."""
    from bench.html_report import build_report
    from storage.bundle import SUFFIX, export_bundle

    name = "melt_runs_" + "_".join(map(str, ids[:6])) + ("_etc" if len(ids) > 6 else "")
    a, b = st.columns(2)
    with a:
        data = _prepared("bundle", ids, export_bundle)
        if data is not None:
            st.download_button(f"Download bundle ({len(data) / 1024:,.0f} KiB)", data, file_name=name + SUFFIX,
                               mime="application/gzip", key="r_share_bundle_dl", icon=":material/download:",
                               on_click="ignore")
            st.caption("Everything of these runs, for `./melt import` or the import box on another history.")
    with b:
        data = _prepared("report", ids, lambda i: build_report(i).encode())
        if data is not None:
            st.download_button(f"Download HTML report ({len(data) / 2**20:,.1f} MiB)", data,
                               file_name=name + ".html", mime="text/html", key="r_share_report_dl",
                               icon=":material/download:", on_click="ignore")
            st.caption("One file with interactive charts; opens offline in any browser.")


def import_box() -> None:
    """Upload a bundle and import it (validated, all-or-nothing); says what was imported or what is wrong."""
    from storage.bundle import BundleError, import_bundle

    with st.expander("Import runs from a bundle", icon=":material/upload:"):
        up = st.file_uploader("Bundle file (*.melt.json.gz from ./melt export or this page)", key="r_import_file")
        if up is not None and st.button("Import", key="r_import_go", type="primary"):
            try:
                result = import_bundle(up.getvalue())
            except BundleError as e:
                st.error(f"Not imported: {esc_md(e)}")
            else:
                st.session_state["r_table_v"] = st.session_state.get("r_table_v", 0) + 1
                st.success(esc_md(result.message()))
