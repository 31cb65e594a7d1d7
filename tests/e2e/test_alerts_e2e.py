"""Alerts and the SLO search in a real Chromium: a real `slo` run on the sim (CLI, same history as the dashboard) with
a TTFT alert limit it must cross; Live shows the alert firing while the run goes, then the per-level alerts and the
search's answer when it is done. Screenshots: artifacts/e2e/alerts_live.png, alerts_done.png, alerts_levels.png."""
from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from tests.e2e.conftest import ROOT, SHOTS
from tests.e2e.test_glance_e2e import _settle

pytestmark = [pytest.mark.e2e]


def _latest_run_id(db) -> int | None:
    from storage import queries as q

    runs = q.list_runs(db)
    return runs[0].id if runs else None


def test_live_alerts_and_slo_search_in_chromium(dashboard, browser_page):
    base, db = dashboard
    page = browser_page
    cmd = [sys.executable, "-m", "bench", "--db", str(db), "slo", "--engine", "sim", "--gpu", "L40S", "--model",
           "meta-llama/Llama-3.1-8B-Instruct", "--input-len", "2048", "--output-len", "16", "--requests", "40",
           "--ttft-ms", "1200", "--start", "2", "--max", "16", "--alert", "ttft_p99_ms=300,600", "--name",
           "alerts e2e"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while (rid := _latest_run_id(db)) is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert rid is not None, "the CLI run never appeared in the history"
        page.set_viewport_size({"width": 1500, "height": 1300})
        page.goto(f"{base}/live?run={rid}")
        crit = page.get_by_text(re.compile(r"CRITICAL · TTFT p99 [\d,.]+ ms > 600 ms")).first
        crit.wait_for(timeout=120_000)   # the live monitor's event, drawn by the 1 s refresh
        page.locator("[data-testid=stMetricValue]").first.wait_for()
        page.screenshot(path=str(SHOTS / "alerts_live.png"))
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
        page.reload()
        page.get_by_text(re.compile(r"SLO search: highest concurrency meeting the limits = \d+")).wait_for(
            timeout=60_000)
        page.get_by_text(re.compile(r"Level alerts: \d+ critical")).wait_for()
        assert page.get_by_text(re.compile("CRITICAL ·")).count() == 0   # finished: nothing fires any more
        page.locator("[data-testid=stMetricValue]").first.wait_for()
        page.get_by_text("Alerts per level").wait_for()                 # a finished run opens on its Levels tab
        _settle(page)
        page.screenshot(path=str(SHOTS / "alerts_done.png"))
        page.get_by_text("Alerts per level").scroll_into_view_if_needed()
        _settle(page)
        page.screenshot(path=str(SHOTS / "alerts_levels.png"), full_page=True)
    finally:
        if proc.poll() is None:
            proc.terminate()   # our own CLI run: it stops its sim engine and marks the run cancelled
            proc.wait(timeout=60)
