"""Plotly figure builders. Each takes plain data and returns a figure; pages only place them.

Figures are built in one go.Figure(data, layout) call from plain dicts, with template "none" (Streamlit's chart
theme styles them in the browser): plotly's per-property validation, templates and add_vrect() made the Live page
cost ~1.6 s of pure figure building per refresh; this way it is a few milliseconds per chart.
Styling is for a projector: large fonts, thick lines. Any title that shows simulated data says SIMULATED. Names
that come from users go through esc_plotly (Plotly renders a subset of HTML).
"""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go

from app.ui.common import esc_plotly

PALETTE = ["#1f6feb", "#d9480f", "#2f9e44", "#ae3ec9", "#f08c00", "#0c8599", "#e03131", "#495057"]
SIM_TAG = " — SIMULATED"


def _title(text: str, simulated: bool) -> str:
    return text + (SIM_TAG if simulated else "")


def _layout(title: str, *, simulated: bool = False, x: str = "", y: str = "", height: int = 340,
            hover: str = "x unified", **extra) -> dict:
    lay = {
        "template": "none",
        "title": {"text": _title(title, simulated), "font": {"size": 20}},
        "font": {"size": 15}, "height": height, "margin": {"l": 60, "r": 20, "t": 56, "b": 40},
        # Short legends (series names) sit top right under the title; run names go below the plot (legend_below).
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0,
                   "font": {"size": 13}},
        "hovermode": hover,
        # explicit tick and axis-title sizes: Streamlit's theme otherwise draws ticks at ~11 px, unreadable on a projector
        "xaxis": {"title": {"text": x, "font": {"size": 16}}, "showgrid": False, "tickfont": {"size": 14}},
        "yaxis": {"title": {"text": y, "font": {"size": 16}}, "rangemode": "tozero", "tickfont": {"size": 14}},
    }
    lay.update(extra)
    return lay


def _legend_below(lay: dict) -> dict:
    """For legends of run names (long): under the x-axis title, with room kept for it."""
    lay["legend"] = {"orientation": "h", "yanchor": "top", "y": -0.3, "xanchor": "left", "x": 0.0, "font": {"size": 13}}
    lay["margin"] = {**lay["margin"], "b": 110}
    return lay


def _line(x, y, name: str, color: str, *, dash: str = "solid", width: float = 3, markers: bool = False, **kw) -> dict:
    return {"type": "scatter", "x": x, "y": y, "name": esc_plotly(name), "mode": "lines+markers" if markers else "lines",
            "line": {"width": width, "color": color, "dash": dash}, "connectgaps": True, **kw}


def lines(df: pd.DataFrame, x: str, ys: dict[str, str], title: str, *, simulated: bool = False, xlab: str = "",
          ylab: str = "", height: int = 300, dash: dict[str, str] | None = None,
          bands: Sequence[tuple[float, float, str]] = ()) -> go.Figure:
    """One line per column in ys ({legend label: column}); `bands` shade each level's span (start s, end s, label)."""
    data = []
    for i, (label, col) in enumerate(ys.items()):
        if df.empty or col not in df or x not in df:
            continue
        data.append(_line(df[x].to_numpy(), df[col].to_numpy(), label, PALETTE[i % len(PALETTE)],
                          dash=(dash or {}).get(label, "solid")))
    shapes, notes = _bands(bands)
    return go.Figure(data=data, layout=_layout(title, simulated=simulated, x=xlab, y=ylab, height=height,
                                               shapes=shapes, annotations=notes))


def stacked(panels: Sequence[tuple[pd.DataFrame, dict[str, str], str]], x: str, title: str, *, simulated: bool = False,
            xlab: str = "", dash: dict[str, str] | None = None, bands: Sequence[tuple[float, float, str]] = (),
            panel_height: int = 190) -> go.Figure:
    """Several line panels sharing one time axis in ONE figure: panels = [(df, {label: column}, y label)].
    One figure redraws far cheaper in the browser than one per panel (the Live page redraws every second)."""
    n = len(panels)
    gap = 0.07
    data, lay = [], _layout(title, simulated=simulated, height=panel_height * n + 70, hover="x unified")
    color_i = 0
    for i, (df, ys, ylab) in enumerate(panels):
        ax = "" if i == 0 else str(i + 1)
        top = 1 - i / n
        lay[f"yaxis{ax}"] = {"title": {"text": ylab, "font": {"size": 15}}, "rangemode": "tozero",
                             "domain": [top - 1 / n + gap, top], "tickfont": {"size": 14}}
        lay[f"xaxis{ax}"] = {"anchor": f"y{ax}", "matches": "x" if i else None, "showgrid": False,
                             "showticklabels": i == n - 1, "title": {"text": xlab if i == n - 1 else "", "font": {"size": 16}},
                             "tickfont": {"size": 14}}
        for label, col in ys.items():
            if not df.empty and col in df and x in df:
                data.append(_line(df[x].to_numpy(), df[col].to_numpy(), label, PALETTE[color_i % len(PALETTE)],
                                  dash=(dash or {}).get(label, "solid"), xaxis=f"x{ax}", yaxis=f"y{ax}"))
            color_i += 1
    shapes, notes = _bands(bands)
    lay["shapes"], lay["annotations"] = shapes, notes
    lay["margin"] = {**lay["margin"], "t": 90}  # room for a legend of several panels between title and plot
    return go.Figure(data=data, layout=lay)


def _bands(bands: Sequence[tuple[float, float, str]]) -> tuple[list[dict], list[dict]]:
    shapes, notes = [], []
    for i, (a, b, label) in enumerate(bands):
        shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": a, "x1": b, "y0": 0, "y1": 1,
                       "fillcolor": "#868e96", "opacity": 0.07 if i % 2 else 0.14, "line": {"width": 0},
                       "layer": "below"})
        notes.append({"xref": "x", "yref": "paper", "x": a, "y": 1, "text": esc_plotly(label), "showarrow": False,
                      "xanchor": "left", "yanchor": "top", "font": {"size": 14, "color": "#495057"}})
    return shapes, notes


def per_gpu_stacked(df: pd.DataFrame, metrics: Sequence[tuple[str, str]], title: str, *, simulated: bool,
                    panel_height: int = 170, bands: Sequence[tuple[float, float, str]] = ()) -> go.Figure:
    """One panel per metric [(column, y label)], one line per GPU, shared time axis, one legend entry per GPU;
    `bands` shade each level's span across all panels, as on the load charts."""
    n = len(metrics)
    gap = 0.05
    data, lay = [], _layout(title, simulated=simulated, height=panel_height * n + 70, hover="x unified")
    gpus = sorted(df["gpu_index"].dropna().unique()) if not df.empty and "gpu_index" in df else []
    parts = {g: df[df["gpu_index"] == g] for g in gpus}
    for i, (col, ylab) in enumerate(metrics):
        ax = "" if i == 0 else str(i + 1)
        top = 1 - i / n
        lay[f"yaxis{ax}"] = {"title": {"text": ylab, "font": {"size": 15}}, "rangemode": "tozero",
                             "domain": [top - 1 / n + gap, top], "tickfont": {"size": 14}}
        lay[f"xaxis{ax}"] = {"anchor": f"y{ax}", "matches": "x" if i else None, "showgrid": False,
                             "showticklabels": i == n - 1, "tickfont": {"size": 14},
                             "title": {"text": "seconds since start" if i == n - 1 else "", "font": {"size": 16}}}
        for j, g in enumerate(gpus):
            part = parts[g]
            if col not in part:
                continue
            data.append(_line(part["t_s"].to_numpy(), part[col].to_numpy(), f"GPU {int(g)}", PALETTE[j % len(PALETTE)],
                              width=2.5, xaxis=f"x{ax}", yaxis=f"y{ax}", legendgroup=f"gpu{int(g)}",
                              showlegend=i == 0))
    lay["shapes"], lay["annotations"] = _bands(bands)
    return go.Figure(data=data, layout=lay)


def by_concurrency(series: Sequence[tuple[str, pd.DataFrame]], y: str, title: str, ylab: str, *,
                   simulated: bool = False, dash_col: str | None = None, log_x: bool = True,
                   log_y: bool = False, height: int = 400) -> go.Figure:
    """Runs overlaid against concurrency: series = [(run label, df with concurrency + y [+ dash_col])]."""
    data = []
    ticks: set[int] = set()
    for i, (label, df) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        if df.empty or y not in df:
            continue
        ticks |= {int(c) for c in df["concurrency"]}
        data.append(_line(df["concurrency"].to_numpy(), df[y].to_numpy(), label, color, markers=True,
                          marker={"size": 9}))
        if dash_col and dash_col in df:
            tag = next((p for p in ("p99", "p90", "p50") if p in dash_col), dash_col)
            data.append(_line(df["concurrency"].to_numpy(), df[dash_col].to_numpy(), f"{label} ({tag})", color,
                              dash="dash", width=2, markers=True, marker={"size": 7}))
    lay = _legend_below(_layout(title, simulated=simulated, x="concurrency", y=ylab, height=height, hover="closest"))
    if log_x:
        t = sorted(ticks)
        lay["xaxis"].update(type="log", tickvals=t, ticktext=[f"{v:,}" for v in t])
    if log_y:  # e.g. $ per 1M tokens: C=1 costs 100x C=400, a linear axis flattens everything but the first point
        lay["yaxis"] = {**lay["yaxis"], "type": "log", "rangemode": "normal"}
    return go.Figure(data=data, layout=lay)


def pareto(series: Sequence[tuple[str, pd.DataFrame]], *, simulated: bool, height: int = 420) -> go.Figure:
    """Per-user output tok/s (x) vs output tok/s per GPU (y), one curve per run. Each curve labels only its lowest
    and highest concurrency (every point says its C on hover), each run on another side of its points: labelling
    every point of three runs made the C= labels overlap into an unreadable blot."""
    data = []
    sides = ["top center", "bottom center", "middle right", "middle left"]
    for i, (label, df) in enumerate(series):
        if df.empty:
            continue
        concs = [int(c) for c in df["concurrency"]]
        ends = {min(concs), max(concs)}
        data.append(_line(df["tok_s_per_user"].to_numpy(), df["tok_s_per_gpu"].to_numpy(), label,
                          PALETTE[i % len(PALETTE)], markers=True, marker={"size": 9},
                          text=[f"C={c:,}" if c in ends else "" for c in concs], textposition=sides[i % len(sides)],
                          textfont={"size": 14, "color": PALETTE[i % len(PALETTE)]},
                          customdata=concs,
                          hovertemplate="C=%{customdata:,}<br>%{x:,.1f} tok/s per user<br>"
                                        "%{y:,.0f} tok/s per GPU<extra>%{fullData.name}</extra>"))
        data[-1]["mode"] = "lines+markers+text"
    return go.Figure(data=data, layout=_legend_below(_layout(
        "Throughput per GPU vs speed per user", simulated=simulated, x="output tok/s per user",
        y="output tok/s per GPU", height=height, hover="closest")))


def memory_bar(segments: Sequence[tuple[str, float]], total_gb: float, n_gpus: int, *, need_gb: float | None = None,
               title: str = "Memory per GPU", height: int = 260) -> go.Figure:
    """Stacked horizontal bar of one GPU: weights | runtime | KV cache | unused, with the GPU's size marked."""
    colors = {"weights": "#1f6feb", "runtime + activations": "#f08c00", "KV cache": "#2f9e44", "unused": "#dee2e6"}
    data = [{"type": "bar", "y": [f"{n_gpus} × GPU"], "x": [gb], "name": f"{label} {gb:.1f} GB", "orientation": "h",
             "marker": {"color": colors.get(label, "#adb5bd")}, "hovertemplate": f"{label}: {gb:.2f} GB<extra></extra>"}
            for label, gb in segments]
    shapes = [{"type": "line", "xref": "x", "yref": "paper", "x0": total_gb, "x1": total_gb, "y0": 0, "y1": 1,
               "line": {"width": 3, "color": "#212529"}}]
    notes = [{"xref": "x", "yref": "paper", "x": total_gb, "y": 1.0, "yanchor": "bottom", "showarrow": False,
              "text": f"{total_gb:.0f} GB"}]
    if need_gb:
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": need_gb, "x1": need_gb, "y0": 0, "y1": 1,
                       "line": {"width": 2, "dash": "dot", "color": "#e03131"}})
        notes.append({"xref": "x", "yref": "paper", "x": need_gb, "y": 1.0, "yanchor": "bottom", "xanchor": "left",
                      "showarrow": False, "text": "workload KV need", "font": {"color": "#e03131"}})
    lay = _layout(title, height=height, hover="closest", barmode="stack", shapes=shapes, annotations=notes,
                  margin={"l": 10, "r": 10, "t": 60, "b": 110})
    # below the axis title, left-aligned: beside the ticks (y=-0.45) it covered the upper half of the GB scale
    lay["legend"].update(y=-0.95, yanchor="top", x=0.0, xanchor="left")
    lay["xaxis"] = {"title": {"text": "GB", "font": {"size": 16}}, "tickfont": {"size": 14},
                    "range": [0, max(total_gb, sum(g for _, g in segments)) * 1.04]}
    lay["yaxis"] = {}
    return go.Figure(data=data, layout=lay)


def cost_bars(df: pd.DataFrame, *, simulated: bool, cheapest: int | None) -> go.Figure:
    """$ per 1M output tokens per level; green where the level meets the SLOs, the cheapest one outlined."""
    vals = df["usd_per_m_output"].tolist()
    data = [{"type": "bar", "x": [str(c) for c in df["concurrency"]], "y": vals,
             "marker": {"color": ["#2f9e44" if ok else "#adb5bd" for ok in df["meets_slo"]],
                        "line": {"width": [4 if c == cheapest else 0 for c in df["concurrency"]], "color": "#212529"}},
             "text": [f"${v:,.3f}" if v is not None and v == v else "" for v in vals], "textposition": "outside"}]
    lay = _layout("$ per 1M output tokens by concurrency (green = meets SLOs)", simulated=simulated,
                  x="concurrency", y="$ / 1M output tokens", height=360, hover="closest")
    lay["xaxis"]["type"] = "category"
    return go.Figure(data=data, layout=lay)


PLAN_COLORS = {"weights": "#1f6feb", "runtime": "#f08c00", "KV cache": "#2f9e44", "service": "#ae3ec9",
               "free": "#dee2e6"}


def plan_bars(gpus: Sequence[dict], title: str = "Memory per GPU (planned)", *,
              plannable_gb: float | None = None) -> go.Figure:
    """One stacked horizontal bar per GPU: each tenant's weights | runtime | KV cache, the services, what is free.
    gpus: bench.plan.Plan.as_dict()["gpus"] (index, total_gb, segments [{tenant, part, gb}]); the card's size is
    marked, so a bar past the line does not fit; plannable_gb (dotted) is what the planner hands out by itself."""
    data = []
    for g in gpus:
        for s in g["segments"]:
            label = f"{s['tenant']} · {s['part']}" if s["tenant"] else "free"
            data.append({"type": "bar", "y": [f"GPU {g['index']}"], "x": [s["gb"]], "orientation": "h",
                         "name": s["part"], "legendgroup": s["part"], "showlegend": False,
                         "marker": {"color": PLAN_COLORS.get(s["part"], "#adb5bd"), "line": {"width": 1,
                                                                                            "color": "#ffffff"}},
                         "hovertemplate": f"{esc_plotly(label)}: {s['gb']:.2f} GB<extra></extra>"})
    for part, color in PLAN_COLORS.items():  # one legend entry per part, not per tenant
        data.append({"type": "bar", "y": [None], "x": [None], "orientation": "h", "name": part, "legendgroup": part,
                     "marker": {"color": color}})
    total = max((g["total_gb"] for g in gpus), default=0.0)
    widest = max((sum(s["gb"] for s in g["segments"]) for g in gpus), default=0.0)
    shapes = [{"type": "line", "xref": "x", "yref": "paper", "x0": total, "x1": total, "y0": 0, "y1": 1,
               "line": {"width": 3, "color": "#212529"}}]
    notes = [{"xref": "x", "yref": "paper", "x": total, "y": 1.0, "yanchor": "bottom", "showarrow": False,
              "text": f"{total:,.1f} GB"}]
    if plannable_gb:
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": plannable_gb, "x1": plannable_gb, "y0": 0,
                       "y1": 1, "line": {"width": 2, "dash": "dot", "color": "#e03131"}})
        notes.append({"xref": "x", "yref": "paper", "x": plannable_gb, "y": 1.0, "yanchor": "bottom",
                      "xanchor": "right", "showarrow": False, "text": f"planned {plannable_gb:,.1f}",
                      "font": {"color": "#e03131"}})
    lay = _layout(title, height=190 + 42 * len(gpus), hover="closest", barmode="stack", shapes=shapes,
                  annotations=notes, margin={"l": 70, "r": 10, "t": 70, "b": 110})
    lay["legend"].update(y=-0.35 if len(gpus) > 4 else -0.8, yanchor="top", x=0.0, xanchor="left")
    lay["xaxis"] = {"title": {"text": "GB (10^9 bytes)", "font": {"size": 16}}, "tickfont": {"size": 14},
                    "range": [0, max(total, widest) * 1.04]}
    lay["yaxis"] = {"autorange": "reversed", "tickfont": {"size": 14}}
    return go.Figure(data=data, layout=lay)


def ranking_bars(rows: Sequence[dict], *, simulated: bool, title: str = "Blitz score by GPU (best run)") -> go.Figure:
    """Leaderboard ranking: one horizontal bar per GPU model (best score), the median marked, best on top."""
    rows = list(rows)[::-1]  # plotly draws the first category at the bottom
    names = [esc_plotly(f"{r['rank']}. {r['gpu']}") for r in rows]
    data = [{"type": "bar", "orientation": "h", "y": names, "x": [r["best"] for r in rows], "name": "best",
             "marker": {"color": "#adb5bd" if simulated else PALETTE[0]},
             "text": [f"{r['best']:,.0f}" for r in rows], "textposition": "outside"},
            {"type": "scatter", "mode": "markers", "y": names, "x": [r["median"] for r in rows], "name": "median",
             "marker": {"symbol": "line-ns-open", "size": 26, "line": {"width": 4}, "color": "#212529"}}]
    lay = _layout(title, simulated=simulated, x="steady output tok/s at saturation", height=120 + 60 * len(rows),
                  hover="closest")
    lay["yaxis"] = {"type": "category", "tickfont": {"size": 15}, "automargin": True}
    lay["xaxis"]["range"] = [0, 1.12 * max((r["best"] for r in rows), default=1)]  # room for the value labels
    return go.Figure(data=data, layout=lay)
