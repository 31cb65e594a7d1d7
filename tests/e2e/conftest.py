"""Fixtures for driving the real dashboard: a Streamlit server on a free loopback port with its own SQLite file, and
Debian's Chromium under Playwright (never a downloaded browser). Both are stopped, with every run worker the test
started, when the module ends. Screenshots go to artifacts/e2e/ (gitignored)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from app.perf.server import BROWSER_ARGS, stop_group, wait_http
from engines.supervisor import free_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("MELT_CHROMIUM", "/usr/bin/chromium")
SHOTS = ROOT / "artifacts" / "e2e"


def _stop_workers(db: Path) -> None:
    """Cancel any run this module's app started, then make sure its worker process is gone."""
    from storage import queries as q

    try:
        runs = q.list_runs(db)
    except Exception:  # noqa: BLE001 - nothing recorded
        return
    for r in runs:
        d = q.get_run(r.id, db)
        pid = d.worker_pid if d else None
        if not pid:
            continue
        try:
            os.kill(pid, signal.SIGTERM)  # the worker stops load + engine and marks the run cancelled
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            # Stuck: end the worker's session and the engines it launched (each leads its own process group).
            for p in [pid] + [i.pid for i in d.instances if i.pid]:
                try:
                    os.killpg(p, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


@pytest.fixture(scope="module")
def dashboard():
    """(base_url, db_path) of a running `streamlit run app/main.py` on a free loopback port."""
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.skip(f"{CHROMIUM} not installed (scripts/install_browser.sh installs Debian's chromium)")
    pytest.importorskip("playwright.sync_api")
    tmp = Path(tempfile.mkdtemp(prefix="melt-e2e-"))
    SHOTS.mkdir(parents=True, exist_ok=True)
    db = tmp / "melt.db"
    port = free_port()
    env = {**os.environ, "MELT_DB": str(db), "MELT_HOME": str(tmp / "home"), "PYTHONUNBUFFERED": "1"}
    env.pop("MELT_PASSWORD", None)
    log = open(SHOTS.parent / "e2e-streamlit.log", "wb")  # artifacts/: kept for a failed run's post-mortem
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.address", "127.0.0.1",
         "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    old_env = {k: os.environ.get(k) for k in ("MELT_DB", "MELT_HOME")}
    os.environ["MELT_DB"], os.environ["MELT_HOME"] = str(db), str(tmp / "home")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/_stcore/health", 60, proc)
        yield base, db
    finally:
        _stop_workers(db)
        stop_group(proc)
        log.close()
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def browser_page():
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="melt-chromium-") as profile, sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                   args=BROWSER_ARGS, viewport={"width": 1500, "height": 2200})
        try:
            page = ctx.new_page()
            page.set_default_timeout(30_000)
            yield page
        finally:
            ctx.close()
