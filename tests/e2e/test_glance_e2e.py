"""Issue 11 in a real Chromium, at 1920×1080 and 1366×768: GPU-first labels and the verdict on Compare, cost across
runs, the readable Levels table, progress of a cancelled run, and the dead ends (unknown ids, one run on Compare).
Screenshots land in artifacts/e2e/glance_*.png: look at them."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.e2e.conftest import SHOTS

pytestmark = [pytest.mark.e2e]

SIZES = [(1920, 1080), (1366, 768)]


def _settle(page) -> None:
    """Until Streamlit has no script run going and every chart on the page has drawn."""
    page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget] button')", timeout=30_000)
    page.wait_for_function("""() => Array.from(document.querySelectorAll('[data-testid=stPlotlyChart]'))
        .every(el => el.querySelector('.main-svg'))""", timeout=30_000)


def _shots(page, name: str) -> None:
    """What a person sees without scrolling, at each size, plus the whole page at the first size."""
    for w, h in SIZES:
        page.set_viewport_size({"width": w, "height": h})
        page.wait_for_timeout(300)  # Plotly relayouts on resize (a debounced window event): no state to wait for
        _settle(page)
        page.screenshot(path=str(SHOTS / f"glance_{name}_{w}x{h}.png"))
    # The page scrolls inside Streamlit's main container, not the window: a tall viewport shows all of it.
    tall = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
    page.set_viewport_size({"width": SIZES[0][0], "height": min(6000, max(SIZES[0][1], int(tall)))})
    page.wait_for_timeout(300)
    _settle(page)
    page.screenshot(path=str(SHOTS / f"glance_{name}_full.png"))
    page.set_viewport_size({"width": SIZES[0][0], "height": SIZES[0][1]})


@pytest.fixture(scope="module")
def two_gpus(dashboard):
    from tests.app.seed import seed_run

    base, db = dashboard
    now = datetime.now(timezone.utc)
    h200 = seed_run(db, name="", gpu="H200-141GB", levels=(10, 100, 400), requests_per_level=120, speed=1.3,
                    price=3.5, seed=1, created_at=now - timedelta(hours=2))
    h100 = seed_run(db, name="", gpu="H100-SXM-80GB", levels=(10, 100, 400), requests_per_level=120, speed=1.0,
                    price=2.5, seed=2, created_at=now - timedelta(hours=1))
    cancelled = seed_run(db, name="stopped early", gpu="H100-SXM-80GB", levels=(10, 100), requests_per_level=60,
                         status="cancelled", seed=3)
    return base, db, h200, h100, cancelled


def test_compare_gpu_first_with_verdict(two_gpus, browser_page):
    base, db, h200, h100, _ = two_gpus
    page = browser_page
    page.goto(f"{base}/compare?runs={h200},{h100}")
    page.get_by_text("H200 (SIMULATED): ").first.wait_for()          # the verdict line names the GPU first
    page.get_by_text("peak tok/s").first.wait_for()
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .legendtext').length >= 2")
    legends = page.evaluate("""() => Array.from(document.querySelectorAll('.legendtext')).map(e => e.textContent)""")
    assert "H200 (SIMULATED)" in legends and "H100-SXM (SIMULATED)" in legends, legends
    _shots(page, "compare")


def test_cost_two_runs(two_gpus, browser_page):
    base, db, h200, h100, _ = two_gpus
    page = browser_page
    page.goto(f"{base}/cost?runs={h200},{h100}")
    page.get_by_text("Cheapest per token meeting the SLOs").first.wait_for()
    _shots(page, "cost_two_runs")
    page.get_by_role("tab", name="$ per 1M vs concurrency").click()   # the chart: a lazy tab
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .legendtext').length >= 2")
    legends = page.evaluate("""() => Array.from(document.querySelectorAll('.legendtext')).map(e => e.textContent)""")
    assert "H200 (SIMULATED)" in legends and "H100-SXM (SIMULATED)" in legends, legends
    _shots(page, "cost_two_runs_chart")


def test_live_finished_levels_and_cancelled_progress(two_gpus, browser_page):
    base, db, h200, _, cancelled = two_gpus
    page = browser_page
    page.goto(f"{base}/live?run={h200}")
    page.get_by_text("TTFT p50 ms").first.wait_for(state="attached")  # readable headers (a canvas grid: hidden DOM)
    _shots(page, "live_levels")
    page.goto(f"{base}/live?run={cancelled}")
    page.get_by_text("Sweep:").first.wait_for()
    text = page.locator("[data-testid=stProgress]").first.inner_text()
    assert "Sweep: 67%" in text, text        # (60 + 20) of 120 planned requests, not 100%
    page.get_by_text("C=100: cancelled 20/60").wait_for()
    _shots(page, "live_cancelled")


def test_dead_ends_say_what_is_missing(two_gpus, browser_page):
    base, db, h200, _, _ = two_gpus
    page = browser_page
    page.goto(f"{base}/compare?runs={h200},999")
    page.get_by_text("#999").first.wait_for()
    page.goto(f"{base}/cost?run=999")
    page.get_by_text("Not found in this history").first.wait_for()
    _shots(page, "cost_missing")
    page.goto(f"{base}/compare?runs={h200}")                          # "Compare with others" from Live
    page.get_by_text("to compare with").first.wait_for()
    page.get_by_text("Side by side").wait_for()


def test_presentation_view_fits_the_screen(two_gpus, browser_page):
    from tests.app.seed import seed_run

    base, db, *_ = two_gpus
    rid = seed_run(db, status="running", name="", gpu="H200-141GB", levels=(10, 100, 400), requests_per_level=120)
    page = browser_page
    page.goto(f"{base}/live?run={rid}&present=1")
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2")
    assert page.get_by_role("link", name="Compare").count() == 0             # no navigation on the projector
    for w, h in SIZES:
        page.set_viewport_size({"width": w, "height": h})
        page.wait_for_timeout(300)  # Plotly's debounced resize
        _settle(page)
        top = page.evaluate("() => document.querySelector('.js-plotly-plot').getBoundingClientRect().top")
        assert top < h * 0.5, f"first chart starts at {top:.0f} px of {h}"     # the charts are what one sees
        ticks = page.evaluate("""() => Math.min(...Array.from(document.querySelectorAll('.xtick text, .ytick text'))
            .map(t => parseFloat(getComputedStyle(t).fontSize)))""")
        assert ticks >= 14, ticks                                            # readable from the back of a room
        page.screenshot(path=str(SHOTS / f"glance_present_{w}x{h}.png"))
    page.set_viewport_size({"width": SIZES[0][0], "height": SIZES[0][1]})


def test_launch_memory_fit_legend_leaves_the_scale_readable(dashboard, browser_page):
    base, _ = dashboard
    page = browser_page
    page.goto(base + "/")
    page.get_by_text("Memory per GPU").first.wait_for()
    _settle(page)
    # every tick label of the GB axis sits clear of the legend (the legend used to cover the right half of them)
    overlap = page.evaluate("""() => {
        const plot = Array.from(document.querySelectorAll('.js-plotly-plot'))
            .find(p => (p.textContent || '').includes('Memory per GPU'));
        const legend = plot.querySelector('.legend').getBoundingClientRect();
        return Array.from(plot.querySelectorAll('.xtick text')).filter(t => {
            const r = t.getBoundingClientRect();
            return !(r.bottom < legend.top || r.top > legend.bottom || r.right < legend.left || r.left > legend.right);
        }).map(t => t.textContent);
    }""")
    assert overlap == [], overlap
    _shots(page, "launch")


def test_live_running_refresh_control_fits(two_gpus, browser_page):
    from tests.app.seed import seed_run

    base, db, *_ = two_gpus
    rid = seed_run(db, status="running", name="", gpu="H200-141GB", levels=(10, 100), requests_per_level=80)
    page = browser_page
    page.set_viewport_size({"width": 1366, "height": 768})
    page.goto(f"{base}/live?run={rid}")
    paused = page.get_by_text("paused", exact=True)
    paused.wait_for()
    # the whole control is inside its column (at 1366 px its last button was cut off at the column's edge)
    right, col = page.evaluate("""() => { const b = Array.from(document.querySelectorAll('button'))
        .find(x => x.textContent.trim() === 'paused');
        return [b.getBoundingClientRect().right, b.closest('[data-testid=stColumn]').getBoundingClientRect().right]; }""")
    assert right <= col + 0.5, (right, col)
    _shots(page, "live_running")
