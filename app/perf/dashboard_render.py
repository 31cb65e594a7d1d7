"""Render benchmark: the Runs page and a run's (Live) page on a run with 10 levels x 10,000 request rows.

    .venv/bin/python -m app.perf.dashboard_render [--requests 10000] [--repeat 5] [--no-browser]

Seeds a fresh SQLite file (one big run + a 30-run history) through the storage models, then times, median of
--repeat:
  1. the storage queries the pages make (what a page pays before drawing anything);
  2. the full page script under streamlit.testing AppTest (queries + pandas + Plotly figure building);
  3. unless --no-browser: a real headless Chromium against `streamlit run`, from navigation until every chart is
     drawn and Streamlit is idle (what a person waits for).
Target (docs/PERFORMANCE.md): every page under 2 s.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LEVELS = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


def _median_s(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def seed(db: Path, requests: int, store_frames: bool = True) -> int:
    from app.perf.seed import seed_history, seed_run

    t = time.perf_counter()
    seed_history(db, 30, levels=(1, 8, 64), requests_per_level=50)
    big = seed_run(db, name="big sweep: 10 levels x 10k requests", levels=LEVELS, requests_per_level=requests,
                   seed=42, tags=["perf"])
    print(f"seeded {db} in {time.perf_counter() - t:.1f} s (run #{big}: {len(LEVELS)} levels x {requests:,} requests)")
    if store_frames:  # what the worker does at a run's end (bench.sweep): its chart frames, stored once
        from bench.run_frames import store

        t = time.perf_counter()
        store(big, db)
        print(f"stored run #{big}'s chart frames in {time.perf_counter() - t:.2f} s (as the worker does at run end)")
    return big


def bench_queries(db: Path, big: int, repeat: int) -> list[tuple[str, float]]:
    from storage import queries as q

    pts = q.request_points(big, db)
    series = q.RunSeries(big)
    series.refresh(db)
    return [
        ("list_runs (31 runs)", _median_s(lambda: q.list_runs(db), repeat)),
        ("get_run + level_table", _median_s(lambda: q.level_table(q.get_run(big, db)), repeat)),
        (f"request_points ({len(pts['id']):,} rows)", _median_s(lambda: q.request_points(big, db), repeat)),
        ("throughput_series + latency_series", _median_s(
            lambda: (q.throughput_series(pts, bucket_s=5), q.latency_series(pts, bucket_s=10)), repeat)),
        ("RunSeries.refresh, nothing new (a live tick)", _median_s(lambda: series.refresh(db), repeat)),
    ]


def bench_apptest(db: Path, big: int, repeat: int) -> list[tuple[str, float]]:
    """Each page in a fresh AppTest session (so the Live page pays its full first read), timing the page script
    itself through a hook on StreamlitPage.run, i.e. what the server spends before the browser gets anything."""
    import importlib

    from streamlit.testing.v1 import AppTest

    page_mod = importlib.import_module("streamlit.navigation.page")
    orig_run = page_mod.StreamlitPage.run
    spent: dict[str, float] = {}

    def timed_run(self):
        t = time.perf_counter()
        try:
            return orig_run(self)
        finally:
            spent[str(self.title)] = time.perf_counter() - t

    page_mod.StreamlitPage.run = timed_run
    main = str(ROOT / "app" / "main.py")
    out = []
    try:
        import streamlit as st

        for label, name, query, tab in [
                ("Launch page", "launch", {}, None), ("Runs page", "runs", {}, None),
                (f"Live page, run #{big} (opens on Levels)", "live", {"run": big}, None),
                (f"Live page, run #{big}, Throughput & latency tab", "live", {"run": big}, "Throughput & latency"),
                (f"Live page, run #{big}, GPUs tab", "live", {"run": big}, "GPUs"),
                ("Compare page (big + 1)", "compare", {"runs": f"{big},{big - 1}"}, None),
                (f"Cost page, run #{big}", "cost", {"run": big}, None),
                (f"Cost page, runs #{big} + #{big - 1}", "cost", {"runs": f"{big},{big - 1}"}, None),
                (f"Live presentation view, run #{big}", "live", {"run": big, "present": "1"}, None)]:
            times = []
            for _ in range(repeat):
                st.cache_data.clear()  # cold: a first viewer pays the full read of the run's series
                at = AppTest.from_file(main, default_timeout=120).run()  # lands on Launch
                at.query_params.update({k: str(v) for k, v in query.items()})
                if tab:
                    at.session_state["live-tab-done"] = tab
                spent.clear()
                at.switch_page(f"views/{name}.py").run()
                assert not at.exception, [e.value for e in at.exception]
                times.append(spent[name.capitalize() if name != "gpus" else "GPUs"])
            out.append((label + " script", statistics.median(times)))

    finally:
        page_mod.StreamlitPage.run = orig_run
    return out


def bench_browser(db: Path, big: int, repeat: int) -> list[tuple[str, float]]:
    from playwright.sync_api import sync_playwright

    from app.perf.server import BROWSER_ARGS, dashboard

    env = {**os.environ, "MELT_DB": str(db)}
    env.pop("MELT_PASSWORD", None)
    with dashboard(env) as (_proc, base):
        out = []
        with tempfile.TemporaryDirectory() as prof, sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(prof, executable_path="/usr/bin/chromium", headless=True,
                                                       args=BROWSER_ARGS, viewport={"width": 1500, "height": 2200})
            page = ctx.new_page()
            page.goto(base + "/runs")  # warm-up: server imports, first script run
            page.wait_for_selector("[data-testid=stDataFrame]", timeout=60_000)

            def load(path: str, charts: int, tables: int = 1, marker: str = ""):
                """Open `path` until `charts` are drawn, `tables` shown, `marker` (text the script writes late; for
                the pages without a table to wait for) is on the page and Streamlit is idle."""
                def go():
                    page.goto(base + path)
                    page.wait_for_function(
                        """([c, t, m]) => Array.from(document.querySelectorAll('.js-plotly-plot'))
                                  .filter(el => el._fullLayout).length >= c
                              && document.querySelectorAll('[data-testid=stDataFrame]').length >= t
                              && document.body.innerText.includes(m)
                              && !document.querySelector('[data-testid=stStatusWidget] button')""",
                        arg=[charts, tables, marker], timeout=60_000, polling=50)
                return go

            out.append(("Runs page, new document (table drawn)", _median_s(load("/runs", 0), repeat)))
            out.append((f"Live page, run #{big}, new document (Levels tab: table + 2 charts)",
                        _median_s(load(f"/live?run={big}", 2), repeat)))
            out.append((f"Compare page, #{big} + #{big - 1}, new document (Throughput tab: 1 chart + 2 tables)",
                        _median_s(load(f"/compare?runs={big},{big - 1}", 1, 2), repeat)))
            out.append((f"Cost page, #{big} + #{big - 1}, new document (3 tables, chart in a tab)",
                        _median_s(load(f"/cost?runs={big},{big - 1}", 0, 3), repeat)))

            for title, path, marker, charts in (
                    ("Launch page, new document (form, memory check, Start)", "/launch", "Start sweep", 0),
                    ("Planner page, new document (dwani.ai recipe: stacked bars)", "/planner",
                     "Each GPU: services first", 1),
                    ("Blitz page, new document (no Blitz run yet)", "/blitz", "No Blitz run yet", 0),
                    ("Leaderboard page, new document (no Blitz run yet)", "/leaderboard",
                     "No Blitz run in this history yet", 0),
                    ("GPUs page, new document (catalog, health verdicts)", "/gpus", "health verdicts", 0)):
                out.append((title, _median_s(load(path, charts, 0, marker), repeat)))

            def click_tab(path: str, name: str, title: str):
                """Open `path`, then time a click on tab `name` until a chart titled `title` is drawn."""
                def go():
                    page.goto(base + path)
                    page.wait_for_function("""() => document.querySelectorAll('[data-testid=stDataFrame]').length >= 2
                                  && !document.querySelector('[data-testid=stStatusWidget] button')""",
                                           timeout=60_000, polling=50)
                    t = time.perf_counter()
                    page.get_by_role("tab", name=name, exact=True).click()
                    page.wait_for_function(
                        f"""() => Array.from(document.querySelectorAll('.js-plotly-plot'))
                                  .some(el => el._fullLayout && (el._fullLayout.title.text || '').includes({title!r}))
                              && !document.querySelector('[data-testid=stStatusWidget] button')""",
                        timeout=60_000, polling=20)
                    times.append(time.perf_counter() - t)
                return go

            for path, name, title in ((f"/compare?runs={big},{big - 1}", "Latency", "TTFT p50"),
                                      (f"/compare?runs={big},{big - 1}", "$ per 1M tokens", "$ per 1M"),
                                      (f"/compare?runs={big},{big - 1}", "Throughput vs latency", "speed per user"),
                                      (f"/cost?runs={big},{big - 1}", "$ per 1M vs concurrency", "$ per 1M")):
                times = []
                for _ in range(repeat):
                    click_tab(path, name, title)()
                out.append((f"{path.split('?')[0][1:].capitalize()} page: click '{name}' until its chart is drawn",
                            statistics.median(times)))

            def nav(name: str, charts: int):
                """In-app navigation (what a person does: click the top nav); the Live page shows the latest run."""
                def go():
                    page.get_by_role("link", name=name).first.click()
                    page.wait_for_function(
                        f"""() => location.pathname.endsWith('{name.lower()}')
                              && !!document.querySelector('[data-testid=stDataFrame]')
                              && Array.from(document.querySelectorAll('.js-plotly-plot'))
                                   .filter(el => el._fullLayout).length >= {charts}
                              && !document.querySelector('[data-testid=stStatusWidget] button')""",
                        timeout=60_000, polling=20)
                return go

            runs_t, live_t = [], []
            for _ in range(repeat):
                runs_t.append(_median_s(nav("Runs", 0), 1))
                live_t.append(_median_s(nav("Live", 2), 1))
            out.append(("Runs page, clicked in the top nav", statistics.median(runs_t)))
            out.append((f"Live page (latest run = #{big}), clicked in the top nav", statistics.median(live_t)))

            def tab(name: str, charts: int):
                def go():
                    page.goto(f"{base}/live?run={big}")
                    page.wait_for_selector("[data-testid=stDataFrame]", timeout=60_000)
                    t = time.perf_counter()
                    page.get_by_role("tab", name=name, exact=True).click()
                    page.wait_for_function(
                        f"""() => Array.from(document.querySelectorAll('.js-plotly-plot'))
                                  .filter(el => el._fullLayout).length >= {charts}
                              && !document.querySelector('[data-testid=stStatusWidget] button')""",
                        timeout=60_000, polling=50)
                    times.append(time.perf_counter() - t)
                return go

            for name, charts in (("Throughput & latency", 3), ("GPUs", 1)):
                times: list[float] = []
                for _ in range(repeat):
                    tab(name, charts)()
                what = f"Live page, run #{big}: click '{name}' until its {charts} charts are drawn"
                out.append((what + " (first viewer)", times[0]))   # server reads the run's series
                out.append((what + " (cached)", statistics.median(times[1:] or times)))
            # last: the presentation view has no navigation for nav() to click
            out.append((f"Live presentation view, run #{big}, new document (2 charts)",
                        _median_s(load(f"/live?run={big}&present=1", 2, 0), repeat)))
            ctx.close()
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m app.perf.dashboard_render", description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=10_000, help="request rows per level (10 levels)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--no-stored-frames", action="store_true",
                    help="do not store the big run's chart frames at seed time (a run finished before migration "
                         "0008: its first viewer pays the full read, then stores them)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="melt-render-") as tmp:
        db = Path(tmp) / "melt.db"
        os.environ["MELT_DB"] = str(db)
        os.environ.setdefault("MELT_HOME", str(Path(tmp) / "home"))
        big = seed(db, args.requests, store_frames=not args.no_stored_frames)
        rows = [("queries", *r) for r in bench_queries(db, big, args.repeat)]
        rows += [("AppTest", *r) for r in bench_apptest(db, big, args.repeat)]
        if not args.no_browser and Path("/usr/bin/chromium").exists():
            rows += [("Chromium", *r) for r in bench_browser(db, big, args.repeat)]
        w = max(len(r[1]) for r in rows)
        print(f"\n{'layer':<9} {'what':<{w}} {'median s':>9}")
        print(f"{'-' * 9} {'-' * w} {'-' * 9}")
        for layer, what, s in rows:
            print(f"{layer:<9} {what:<{w}} {s:>9.3f}")
        print(f"\n(median of {args.repeat}; {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
