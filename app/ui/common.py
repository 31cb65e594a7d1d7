"""Helpers every page uses: escaping, labels, downloads, chart display, the optional password gate, and guarded
access to parts other modules provide (catalog, engine registry, NVML) so the app runs before they land.

User text (run names, tags, notes) never reaches markdown unescaped and never goes through unsafe_allow_html.
"""
from __future__ import annotations

import hmac
import html
import io
import os
import re
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import streamlit as st

# Every ASCII punctuation character may be backslash-escaped in CommonMark; escaping them all disables links,
# images, emphasis, HTML, Streamlit's :color[...] / :emoji: directives and $math$ in one go.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:=\"'&%^@;,/?])")


# GFM turns bare URLs, www. hosts and e-mail addresses into links even when their punctuation is escaped; a
# zero-width space inside the trigger breaks the pattern and shows the same text.
_AUTOLINK = re.compile(r"(?i)(://|www|@)")


def esc_md(text: Any) -> str:
    """Make user text inert inside st.markdown / widget labels: escape markdown, break autolinks, flatten newlines."""
    s = "" if text is None else str(text)
    s = s.replace("\r", " ").replace("\n", " ")
    s = _AUTOLINK.sub(lambda m: m.group(1)[0] + "\u200b" + m.group(1)[1:], s)
    return _MD_SPECIAL.sub(r"\\\1", s)


def esc_plotly(text: Any) -> str:
    """Plotly renders a subset of HTML (<b>, <a href>) in titles, legends and hover text: escape it."""
    return html.escape("" if text is None else str(text), quote=True)


SIM_BADGE = ":orange-badge[SIMULATED]"


def sim_badge(simulated: bool) -> str:
    return SIM_BADGE if simulated else ":green-badge[measured]"


def sim_error_caption(d, label: str | None = None) -> None:
    """For a simulated run (a storage.queries.RunDetail): the expected error of its numbers against measured runs of
    that shape (engines.sim.accuracy), one line per group of its levels, after `label` when given (the Compare
    page's legend); nothing for a measured run."""
    if not d.run.simulated:
        return
    from bench.report import sim_run_notes

    if lines := sim_run_notes([lv.concurrency for lv in d.levels], d.run.model, d.run.gpu, d.config,
                              d.run.projection):
        st.caption((f"**{esc_md(label)}**  \n" if label else "") + "  \n".join(esc_md(line) for line in lines))


_STATUS_BADGE = {"queued": "gray", "starting": "blue", "running": "blue", "completed": "green", "failed": "red",
                 "cancelled": "orange", "aborted": "red"}


def status_badge(status: str) -> str:
    return f":{_STATUS_BADGE.get(status, 'gray')}-badge[{esc_md(status)}]"


def run_label(run, *, with_id: bool = True) -> str:
    """Plain-text label for selectboxes and tables (these render text literally)."""
    return run.label if with_id else (run.name or run.model) + (" (SIMULATED)" if run.simulated else "")


def fmt_num(v: Any, nd: int = 1) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    if isinstance(v, (int,)) and not isinstance(v, bool):
        return f"{v:,}"
    return f"{float(v):,.{nd}f}"


def fmt_dt(dt: datetime | None) -> str:
    if dt is None:
        return "–"
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_secs(s: float | None) -> str:
    if s is None:
        return "–"
    s = max(0.0, float(s))
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


# -------------------------------------------------------------------------------------------- downloads / charts
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _inert(v):
    """A spreadsheet runs a cell that starts with = + - @ as a formula (CSV injection via a run name or note):
    such text cells get a leading apostrophe. Numbers are left alone (a negative number is not text)."""
    return "'" + v if isinstance(v, str) and v.startswith(_FORMULA_START) else v


def csv_bytes(df: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    safe = df.copy()
    for col in safe.columns:
        if not pd.api.types.is_numeric_dtype(safe[col]):  # object or pandas' str dtype
            safe[col] = safe[col].map(_inert)
    safe.to_csv(buf, index=False)
    return buf.getvalue().encode()


def download_csv(df: pd.DataFrame, filename: str, key: str, label: str = "Download CSV") -> None:
    st.download_button(label, csv_bytes(df), file_name=filename, mime="text/csv", key=key, icon=":material/download:",
                       on_click="ignore")


def plotly_config(filename: str) -> dict:
    """The chart toolbar's camera button downloads a 2x PNG named after the chart."""
    return {"displaylogo": False,
            "toImageButtonOptions": {"format": "png", "filename": re.sub(r"[^A-Za-z0-9_.-]+", "_", filename),
                                     "scale": 2}}


def show_chart(fig, key: str, filename: str | None = None, data: pd.DataFrame | None = None) -> None:
    """Plotly chart (PNG from its toolbar) plus, when `data` is given, a CSV download of what it plots."""
    st.plotly_chart(fig, key=key, config=plotly_config(filename or key))
    if data is not None and not data.empty:
        download_csv(data, f"{filename or key}.csv", key=f"{key}-csv", label="CSV")


def show_table(df: pd.DataFrame, key: str, filename: str | None = None, **kwargs) -> Any:
    out = st.dataframe(df, key=key, hide_index=True, **kwargs)
    download_csv(df, f"{filename or key}.csv", key=f"{key}-csv")
    return out


# ---------------------------------------------------------------------------------------------- password gate
def _secret_password() -> str | None:
    try:
        return st.secrets.get("password")  # type: ignore[no-any-return]
    except Exception:  # no secrets.toml anywhere: that is the normal case
        return None


def configured_password() -> str | None:
    return os.environ.get("MELT_PASSWORD") or _secret_password() or None


def require_password() -> None:
    """If MELT_PASSWORD (or secrets `password`) is set, stop every page until the right password is given.
    For demos on a shared network; the session remembers it until the tab is closed or refreshed."""
    want = configured_password()
    if not want or st.session_state.get("_melt_authed"):
        return
    st.title("Melt")
    with st.form("melt-login"):
        got = st.text_input("Password", type="password", key="melt-password")
        ok = st.form_submit_button("Enter")
    if ok:
        throttle = _login_throttle()
        wait = throttle.wait_s()
        if wait > 0:  # repeated wrong guesses: this one is not even looked at
            st.error(f"Too many wrong passwords: try again in {wait:.0f} s.")
            st.stop()
        if hmac.compare_digest(got.encode(), want.encode()):
            throttle.succeeded()
            st.session_state["_melt_authed"] = True
            st.rerun()
        throttle.failed()
        st.error("Wrong password.")
    st.stop()


@st.cache_resource
def _login_throttle():
    """One counter of wrong guesses for the whole dashboard process (app/ui/throttle.py says why)."""
    from app.ui.throttle import LoginThrottle

    return LoginThrottle()


# ---------------------------------------------------------------------------------- parts others provide
@st.cache_data(ttl=300, show_spinner=False)
def gpu_catalog() -> tuple[dict, str | None]:
    """({id: GPUSpec}, error). The catalog ships in assets/; until then the app says so instead of failing."""
    try:
        from catalog import load_gpus

        return dict(load_gpus()), None
    except Exception as e:  # noqa: BLE001 - CatalogError, missing file, bad YAML: show it, keep going
        return {}, str(e)


@st.cache_data(ttl=300, show_spinner=False)
def model_catalog() -> tuple[dict, str | None]:
    try:
        from catalog import load_models

        return dict(load_models()), None
    except Exception as e:  # noqa: BLE001
        return {}, str(e)


@st.cache_data(ttl=60, show_spinner=False)
def detected_engines() -> tuple[list[dict], str | None]:
    """[{kind, installed, command, version, how_to_install}] from engines.registry, or ([], why not)."""
    try:
        from engines.registry import detect_engines
    except Exception as e:  # noqa: BLE001
        return [], f"engine detection not available yet ({e.__class__.__name__}: {e})"
    try:
        out = []
        for info in detect_engines():
            get = (lambda k, _i=info: _i.get(k) if isinstance(_i, dict) else getattr(_i, k, None))
            cmd = get("command")
            out.append({"kind": get("kind"), "installed": bool(get("installed")),
                        "command": " ".join(cmd) if isinstance(cmd, (list, tuple)) else cmd,
                        "version": get("version"), "how_to_install": get("how_to_install")})
        return out, None
    except Exception as e:  # noqa: BLE001
        return [], f"engine detection failed: {e}"


@st.cache_data(ttl=30, show_spinner=False)
def detected_gpus() -> tuple[list[dict], str]:
    """(NVML GPUs, status line). [] with the reason when there is no NVML (laptops, CI, this machine)."""
    try:
        from telemetry.nvml import list_gpus, nvml_status
    except Exception as e:  # noqa: BLE001
        return [], f"GPU detection not available yet ({e})"
    try:
        ok, reason = nvml_status()
        return (list_gpus() if ok else []), reason
    except Exception as e:  # noqa: BLE001
        return [], f"NVML error: {e}"


@st.cache_data(ttl=10, show_spinner=False)
def gpu_holders(db_url: str, gpus: tuple[int, ...] | None) -> tuple[list, str | None]:
    """bench.gpu_holders.holders (a stale-run reap, an NVML query and a psutil look at every holder), at most once
    per 10 s per GPU selection: the Launch page reruns on every widget change. Cleared after ending orphans."""
    from bench.gpu_holders import holders

    return holders(db_url, list(gpus) if gpus is not None else None)


def worker_api():
    """bench.runs (start/cancel/reap) or None with an error shown."""
    try:
        import bench.runs as runs

        return runs
    except Exception as e:  # noqa: BLE001
        st.error(f"The run worker is not available: {esc_md(str(e))}")
        return None


def page_header(title: str, caption: str | None = None) -> None:
    st.title(title)
    if caption:
        st.caption(caption)
