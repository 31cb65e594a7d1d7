"""Melt dashboard entry point: `streamlit run app/main.py --server.address 127.0.0.1 --server.headless true`.

Only layout lives under app/: pages read storage and ask bench to start/cancel runs; the sweep itself runs in a
separate worker process, so closing or refreshing the browser never touches a run.
Deep link: `?run=ID` opens that run on the Live page; `/live?run=ID&present=1` is its presentation view.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run app/main.py` puts app/ on sys.path, not the repo root
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app.ui.common import require_password  # noqa: E402

st.set_page_config(page_title="Melt", page_icon=":material/local_fire_department:", layout="wide")
require_password()

if not st.session_state.get("_melt_reaped"):
    # Runs whose worker died (stale heartbeat) become `aborted` once per browser session: cheap, and it means a
    # crashed worker never shows as "running" forever.
    st.session_state["_melt_reaped"] = True
    try:
        from bench.runs import reap_stale

        reap_stale()
    except Exception:  # noqa: BLE001 - the worker API may not be there (or the DB may be busy); never block the UI
        pass

# One file per page in app/views/. Not app/pages/: Streamlit treats a `pages/` folder beside the main script as
# the legacy multipage app until st.navigation first runs, so a fresh server opened at /runs would run that page
# file directly, skipping this script (no password gate, no layout).
PAGES = Path(__file__).resolve().parent / "views"
launch = st.Page(PAGES / "launch.py", title="Launch", icon=":material/rocket_launch:", default=True)
live = st.Page(PAGES / "live.py", title="Live", icon=":material/monitoring:")
pages = [launch, live,
         st.Page(PAGES / "runs.py", title="Runs", icon=":material/history:"),
         st.Page(PAGES / "compare.py", title="Compare", icon=":material/compare_arrows:"),
         st.Page(PAGES / "cost.py", title="Cost", icon=":material/payments:"),
         st.Page(PAGES / "planner.py", title="Planner", icon=":material/stacked_bar_chart:"),
         st.Page(PAGES / "blitz.py", title="Blitz", icon=":material/bolt:"),
         st.Page(PAGES / "leaderboard.py", title="Leaderboard", icon=":material/leaderboard:"),
         st.Page(PAGES / "gpus.py", title="GPUs", icon=":material/memory:")]
# Live's presentation view (?present=1) hides the navigation: a projector shows the run, not the app
current = st.navigation(pages, position="hidden" if st.query_params.get("present") == "1" else "top")
if current is launch and "run" in st.query_params:  # deep link http://host:8501/?run=ID opens the run on Live
    st.switch_page(live, query_params=st.query_params.to_dict())  # keeps present=1 too
current.run()
