"""The Blitz and Leaderboard pages in a real Chromium: a seeded history of Blitz runs (results written as the worker
writes them), the result tiles and curves, the ranking with simulated entries apart, and the one button starting a
real (simulated) Blitz run through the worker. Screenshots: artifacts/e2e/blitz_*.png, leaderboard_*.png."""
from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import SHOTS

pytestmark = [pytest.mark.e2e]


def _settle(page, charts: int = 0) -> None:
    """The script run is over and at least `charts` charts are drawn, axes and titles included (a loaded machine
    draws the page top down, and a chart's svg before its text)."""
    page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget] button')", timeout=30_000)
    page.wait_for_function("""n => {
        const all = Array.from(document.querySelectorAll('[data-testid=stPlotlyChart]'));
        return all.length >= n && all.every(el => el.querySelector('.main-svg') && el.innerText.trim().length > 0);
    }""", arg=charts, timeout=30_000)


def _full(page, name: str) -> None:
    tall = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
    page.set_viewport_size({"width": 1500, "height": min(6000, max(1000, int(tall)))})
    page.wait_for_timeout(300)
    _settle(page)
    page.screenshot(path=str(SHOTS / f"{name}.png"))
    page.set_viewport_size({"width": 1500, "height": 1000})


@pytest.fixture(scope="module")
def blitzes(dashboard):
    from app.perf.seed import seed_blitz

    base, db = dashboard
    ids = [seed_blitz(db, gpu="H100-SXM-80GB", speed=0.7, seed=1),
           seed_blitz(db, gpu="H200-141GB", speed=1.0, seed=2),
           seed_blitz(db, gpu="H200-141GB", speed=1.15, seed=3, health="WARN"),
           seed_blitz(db, gpu="H100-SXM-80GB", engine="sim", simulated=True, speed=2.0, seed=4)]
    return base, db, ids


def test_blitz_result_page(blitzes, browser_page):
    base, db, ids = blitzes
    page = browser_page
    page.set_viewport_size({"width": 1500, "height": 1000})
    page.goto(f"{base}/blitz?run={ids[2]}")
    page.get_by_text("Blitz score", exact=True).first.wait_for()
    _settle(page, charts=1)
    body = page.inner_text("[data-testid=stMain]")
    assert "GPU health" in body and "WARN" in body and "thermal slowdown" in body
    assert "Roofline share" in body and "tok/s per W" in body
    assert page.locator("[data-testid=stPlotlyChart] .main-svg").count() >= 1
    assert "Power, temperature, clocks" in page.inner_text("[data-testid=stPlotlyChart]")
    page.screenshot(path=str(SHOTS / "blitz_result.png"))
    _full(page, "blitz_result_full")
    page.goto(f"{base}/blitz?run={ids[3]}")
    page.get_by_text("Blitz score (SIMULATED)", exact=True).first.wait_for()
    _settle(page, charts=1)
    # the curves say it too (the previous run's chart may still be on screen for a moment after the switch)
    page.locator("[data-testid=stPlotlyChart]", has_text="SIMULATED").first.wait_for(timeout=30_000)
    page.screenshot(path=str(SHOTS / "blitz_simulated.png"))


def test_leaderboard_page(blitzes, browser_page):
    base, db, ids = blitzes
    page = browser_page
    page.goto(f"{base}/leaderboard")
    page.get_by_text("Measured GPUs").first.wait_for()
    charts = page.locator("[data-testid=stPlotlyChart]")
    _settle(page, charts=2)  # both ranking charts
    body = page.inner_text("[data-testid=stMain]")
    assert "Simulated GPUs (SIMULATED" in body
    assert charts.count() == 2
    real_chart = charts.nth(0).inner_text()
    assert "1. H200-141GB" in real_chart and "2. H100-SXM-80GB" in real_chart and "SIMULATED" not in real_chart
    assert "SIMULATED" in charts.nth(1).inner_text()
    page.screenshot(path=str(SHOTS / "leaderboard.png"))
    _full(page, "leaderboard_full")


def test_the_one_button_starts_a_simulated_blitz(blitzes, browser_page):
    from storage import queries as q

    base, db, ids = blitzes
    page = browser_page
    page.goto(f"{base}/blitz")
    page.get_by_role("button", name="Run Blitz").wait_for()
    _settle(page)
    page.get_by_role("button", name="Run Blitz").click()
    deadline = time.monotonic() + 60
    new = []
    while time.monotonic() < deadline and not new:
        new = [r for r in q.list_runs(db, tags=["blitz"]) if r.id not in ids]
        time.sleep(0.5)
    assert new and new[0].simulated, "the button made no Blitz run"
    page.wait_for_url(f"**/blitz?run={new[0].id}", timeout=30_000)
    page.get_by_text("Watch it on Live").first.wait_for(timeout=60_000)
    page.screenshot(path=str(SHOTS / "blitz_running.png"))
    # the worker took it: a real sim engine and the first search level (the module's teardown cancels the run)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        d = q.get_run(new[0].id, db)
        if d.levels:
            break
        time.sleep(1)
    assert d.levels and (d.levels[0].summary.get("blitz") or {"phase": "search"})["phase"] == "search"
    assert d.levels[0].concurrency == 8
