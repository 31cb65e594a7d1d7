"""Interleaved A/B of new-document page loads: two dashboards (an older checkout and this one, each on a history
seeded by app.perf.dashboard_render.seed), one Chromium alternating between them, so both see the same machine load.

    git worktree add --detach /tmp/base 3e6f401
    .venv/bin/python app/perf/dashboard_ab.py /tmp/base . 6

The page shapes (charts, tables waited for) are those before / after the lazy chart tabs (docs/PERFORMANCE.md).
"""
import os, subprocess, sys, tempfile, time, statistics
from pathlib import Path
base_tree, new_tree, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, new_tree)
from app.perf.server import BROWSER_ARGS, wait_http, stop_group
from engines.supervisor import free_port
from playwright.sync_api import sync_playwright
PY = sys.executable
tmp = Path(tempfile.mkdtemp())
procs, bases = [], {}
for name, tree in (("base", base_tree), ("new", new_tree)):
    db = tmp / f"{name}.db"
    env = {**os.environ, "MELT_DB": str(db), "MELT_HOME": str(tmp / name)}
    env.pop("MELT_PASSWORD", None)
    subprocess.run([PY, "-c", "import sys; sys.path.insert(0, '.'); from app.perf.dashboard_render import seed; seed(__import__('pathlib').Path(sys.argv[1]), 10000)", str(db)], cwd=tree, env=env, check=True, capture_output=True)
    port = free_port()
    p = subprocess.Popen([PY, "-m", "streamlit", "run", "app/main.py", "--server.address", "127.0.0.1", "--server.port", str(port),
                          "--server.headless", "true"], cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    procs.append(p); bases[name] = f"http://127.0.0.1:{port}"
    wait_http(bases[name] + "/_stcore/health", 60, p)
W = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).filter(el => el._fullLayout).length >= %d
 && document.querySelectorAll('[data-testid=stDataFrame]').length >= %d
 && !document.querySelector('[data-testid=stStatusWidget] button')"""
pages = {"compare": ("/compare?runs=31,30", {"base": (5, 2), "new": (1, 2)}),
         "cost": ("/cost?runs=31,30", {"base": (1, 3), "new": (0, 3)}),
         "runs": ("/runs", {"base": (0, 1), "new": (0, 1)})}
res = {(pg, n): [] for pg in pages for n in bases}
try:
    with tempfile.TemporaryDirectory() as prof, sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(prof, executable_path="/usr/bin/chromium", headless=True, args=BROWSER_ARGS, viewport={"width": 1500, "height": 2200})
        page = ctx.new_page()
        for n in bases:  # warm-up: imports, Plotly chunk in the HTTP cache
            for pg, (path, want) in pages.items():
                page.goto(bases[n] + path); page.wait_for_function(W % want[n], timeout=60000, polling=50)
        for r in range(rounds):
            for pg, (path, want) in pages.items():
                for n in (("base", "new") if r % 2 == 0 else ("new", "base")):
                    t = time.perf_counter()
                    page.goto(bases[n] + path); page.wait_for_function(W % want[n], timeout=60000, polling=50)
                    res[(pg, n)].append(time.perf_counter() - t)
        ctx.close()
finally:
    for p in procs: stop_group(p)
for (pg, n), ts in res.items():
    print(f"{pg:8} {n:5} median {statistics.median(ts):.2f}  all {' '.join(f'{t:.2f}' for t in ts)}")
