"""The HTML report opens in headless Chromium with the network cut and draws its charts (screenshot in
artifacts/e2e/report.png): everything it needs is inside the one file."""
import shutil
from pathlib import Path

import pytest

from app.perf.seed import seed_run
from bench.html_report import write_report
from tests.e2e.conftest import CHROMIUM, SHOTS


def test_report_draws_its_charts_offline(tmp_path, browser_page):
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.skip(f"{CHROMIUM} not installed")
    db = tmp_path / "r.db"
    a = seed_run(db, name="<script>window.pwned=1</script>", levels=(1, 4, 16), requests_per_level=30)
    b = seed_run(db, name="second", gpu="H200-141GB", levels=(1, 4, 16), requests_per_level=30, speed=1.4)
    out = tmp_path / "report.html"
    write_report([a, b], out, db)
    page = browser_page
    requests = []
    page.context.route("**/*", lambda route: (requests.append(route.request.url),
                                              route.continue_() if route.request.url.startswith("file:")
                                              else route.abort()))
    page.context.set_offline(True)
    try:
        page.goto(out.as_uri())
        page.wait_for_selector("#chart-tok .main-svg", timeout=30_000)
        page.wait_for_selector("#chart-ttft .main-svg", timeout=30_000)
        assert page.locator("#chart-tok .scatterlayer .trace").count() == 2
        assert page.locator("#chart-ttft .scatterlayer .trace").count() == 4  # p50 + p99 per run
        assert page.evaluate("window.pwned") is None
        assert "SIMULATED" in page.inner_text("h1")
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "report.png"), full_page=False)
    finally:
        page.context.set_offline(False)
        page.context.unroute("**/*")
    assert [u for u in requests if not u.startswith("file:")] == []
