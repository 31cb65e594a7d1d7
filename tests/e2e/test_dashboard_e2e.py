"""The dashboard in a real headless Chromium: launch a sim sweep through the Launch form, watch the Live charts grow,
then Runs, Compare with two runs, Cost and GPUs. Screenshots land in artifacts/e2e/ (look at them)."""
from __future__ import annotations

import importlib.util
import re
import time

import pytest

from storage import queries as q
from tests.e2e.conftest import SHOTS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Points drawn per chart, from Plotly's own processed traces (x may arrive as a base64 typed array).
POINTS_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot'))
    .map(el => (el._fullData || []).reduce((n, t) => n + (t._length || 0), 0))"""


def _settle(page, seconds: float = 0.8) -> None:
    """Let Streamlit finish the rerun a widget change started."""
    time.sleep(seconds)
    page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget] button')", timeout=30_000)


def _shot(page, name: str, sizes: bool = False) -> None:
    """The page as the test browser sees it; with sizes, also what fits on a 1920×1080 and a 1366×768 screen."""
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    if sizes:
        for w, h in ((1920, 1080), (1366, 768)):
            page.set_viewport_size({"width": w, "height": h})
            _settle(page, 0.5)
            page.screenshot(path=str(SHOTS / f"{name}_{w}x{h}.png"))
        page.set_viewport_size({"width": 1500, "height": 2200})
        _settle(page, 0.5)


def _plot_points(page) -> list[int]:
    return page.evaluate(POINTS_JS)


def _worker_ready() -> str | None:
    for mod in ("bench.runs", "bench.worker", "engines.sim.adapter", "engines.sim.server"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} not available yet"
    return None


def test_launch_sim_sweep_and_watch_live(dashboard, browser_page):
    why = _worker_ready()
    if why:
        pytest.skip(why)
    base, db = dashboard
    page = browser_page
    page.goto(base + "/")
    page.get_by_role("button", name="Start sweep").wait_for()
    levels = page.get_by_role("textbox", name="Concurrency levels")
    levels.fill("4,16")
    levels.press("Enter")
    _settle(page)
    page.get_by_text("a duration", exact=True).click()
    _settle(page)
    seconds = page.get_by_role("spinbutton", name="Seconds per level")
    seconds.fill("12")
    seconds.press("Enter")
    _settle(page)
    name = page.get_by_role("textbox", name="Run name")
    name.fill("e2e <b>sweep</b>")
    name.press("Enter")
    _settle(page)
    _shot(page, "01_launch", sizes=True)
    page.get_by_role("button", name="Start sweep").click()

    page.wait_for_url(re.compile(r"/live\?run=\d+"), timeout=30_000)
    run_id = int(re.search(r"run=(\d+)", page.url).group(1))
    assert q.get_run(run_id, db).run.name == "e2e <b>sweep</b>"
    page.get_by_text("e2e <b>sweep</b>", exact=False).first.wait_for()  # escaped: shown literally, not bold

    # Wait until requests are flowing, then check that the charts grow between two polls.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not q.request_points(run_id, db, limit=1)["id"]:
        r = q.get_run(run_id, db).run
        assert r.active, f"run ended {r.status} before any request: {r.error}"
        time.sleep(0.5)
    assert q.request_points(run_id, db, limit=1)["id"], "no request rows after 120 s"
    # The first sample as soon as any chart has points, so the run is still well inside its levels when we look
    # for growth (a finished run's page shows a different set of charts).
    page.wait_for_function(f"() => ({POINTS_JS})().reduce((a, b) => a + b, 0) > 0", timeout=30_000)
    first = sum(_plot_points(page))
    assert q.get_run(run_id, db).run.active, "run finished before the live charts could be watched"
    _shot(page, "02_live_running")
    # a 1 s fragment rerun plus a Plotly redraw: give a loaded machine time, but require growth
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(f"n => ({POINTS_JS})().reduce((a, b) => a + b, 0) > n", arg=first, timeout=30_000)
    except PlaywrightTimeout:
        pass
    second = sum(_plot_points(page))
    if second <= first:
        _shot(page, "02_live_not_growing")
    assert second > first, (f"live charts did not update in 30 s ({first} -> {second} points per chart "
                            f"{_plot_points(page)}; run {q.get_run(run_id, db).run.status})")
    page.get_by_role("tab", name="GPUs").click()
    page.get_by_text("GPU utilization").first.wait_for()
    time.sleep(1.5)
    _shot(page, "02b_live_gpus")
    page.get_by_role("tab", name="Throughput & latency").click()

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and q.get_run(run_id, db).run.active:
        time.sleep(1)
    d = q.get_run(run_id, db)
    assert d.run.status == "completed", (d.run.status, d.run.error)
    assert [lv.status for lv in d.levels] == ["completed", "completed"]
    page.get_by_text("Sweep: 100%").wait_for(timeout=30_000)
    page.get_by_text("SIMULATED run").first.wait_for()
    # The audience keeps the charts it watched: the finished run stays on Throughput & latency, not the Levels table
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= 3")
    assert page.get_by_role("tab", name="Throughput & latency").get_attribute("aria-selected") == "true"
    _settle(page, 1.5)
    _shot(page, "03_live_done")
    for w, h in ((1920, 1080), (1366, 768)):
        page.set_viewport_size({"width": w, "height": h})
        _settle(page, 0.5)
        page.screenshot(path=str(SHOTS / f"03_live_done_{w}x{h}.png"))
    page.set_viewport_size({"width": 1500, "height": 2200})
    # the presentation view of the finished run: its two charts and the peak tiles, no navigation
    page.goto(page.url.split("?")[0] + f"?run={run_id}&present=1")
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2")
    page.get_by_text("Peak output tok/s").first.wait_for()
    assert page.get_by_role("link", name="Compare").count() == 0
    _shot(page, "03b_present_done", sizes=True)


def test_runs_compare_cost_gpus(dashboard, browser_page):
    from tests.app.seed import seed_history

    base, db = dashboard
    page = browser_page
    seeded = seed_history(db, 2, levels=(1, 4, 16, 64), requests_per_level=80)
    pair = seeded

    # Runs: tick the two newest rows' checkboxes (the table is a canvas grid: click by position), then follow
    # "Compare selected".
    n_runs = len(q.list_runs(db))
    page.goto(base + "/runs")
    page.get_by_text(f"{n_runs} run(s)").wait_for()
    _settle(page, 1.5)
    box = page.locator("[data-testid=stDataFrame]").bounding_box()
    row_h = box["height"] / (n_runs + 1)  # header + rows, all the same height
    for i in (0, 1):
        page.mouse.click(box["x"] + 18, box["y"] + row_h * (i + 1.5))
        _settle(page, 1.0)
    page.get_by_text("2 selected").wait_for()
    _shot(page, "04_runs")
    newest = [r.id for r in q.list_runs(db)][:2]
    page.get_by_text("Compare selected").click()
    page.wait_for_url(re.compile(r"/compare\?runs="))
    assert sorted(int(x) for x in re.search(r"runs=([\d%C,]+)", page.url).group(1).replace("%2C", ",").split(",")) \
        == sorted(newest)
    page.get_by_text("Side by side").wait_for()
    page.get_by_text("Config differences").wait_for()
    _settle(page, 2)
    # one chart per lazy tab: only the open tab's chart is drawn; each tab click draws its own
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 1")
    points = _plot_points(page)
    assert len(points) == 1 and points[0] > 0, points
    _shot(page, "05_compare", sizes=True)
    for tab in ("Latency", "$ per 1M tokens", "Throughput vs latency"):
        page.get_by_role("tab", name=tab, exact=True).click()
        _settle(page, 1.0)
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 1")
        points = _plot_points(page)
        assert len(points) == 1 and points[0] > 0, (tab, points)
    _shot(page, "05_compare_pareto")
    page.get_by_text("Config differences").click()                  # a lazy expander: its table comes on opening
    _settle(page, 1.0)
    page.wait_for_function("() => document.querySelectorAll('[data-testid=stDataFrame]').length >= 3")

    page.goto(f"{base}/cost?run={pair[0]}")
    page.get_by_text("Cheapest level meeting SLOs").first.wait_for()
    page.get_by_text("Daily cost").first.wait_for()
    _settle(page, 1.5)
    _shot(page, "06_cost", sizes=True)
    page.get_by_role("tab", name="Chart").click()                   # the per-level bars: a lazy tab
    _settle(page, 1.0)
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 1")
    _shot(page, "06_cost_chart")

    page.goto(f"{base}/gpus")
    page.get_by_text("Last runs' health verdicts").wait_for()
    _settle(page, 1.5)
    _shot(page, "07_gpus", sizes=True)

    # Deep link at the root opens the run on Live.
    page.goto(f"{base}/?run={pair[1]}")
    page.wait_for_url(re.compile(r"/live\?run=\d+"))
    page.get_by_text("Peak output tok/s").first.wait_for()   # a finished run opens on its level summary
