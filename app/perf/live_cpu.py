"""Where the Live page's cost goes: CPU of the run (worker + engine + load generator), the Streamlit server and
Chromium, with the page closed and then open on a running sim sweep.

    .venv/bin/python -m app.perf.live_cpu [--seconds 30] [--concurrency 64]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _cpu(procs) -> float:
    import psutil

    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _tree(pid: int) -> list:
    import psutil

    p = psutil.Process(pid)
    return [p, *p.children(recursive=True)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m app.perf.live_cpu", description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="measuring window, each side")
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args(argv)
    import psutil
    from playwright.sync_api import sync_playwright

    from app.perf.live_overhead import _config
    from app.perf.server import BROWSER_ARGS, dashboard
    from bench.runs import cancel_run, start_run
    from storage import queries as q

    tmp = Path(tempfile.mkdtemp(prefix="melt-cpu-"))
    db = tmp / "melt.db"
    os.environ.update(MELT_DB=str(db), MELT_HOME=str(tmp / "home"))
    run_id = None
    try:
        with dashboard() as (server, base):
            try:
                run_id = start_run(_config([args.concurrency], args.seconds * 2 + 60, "cpu"), db)
                time.sleep(12)  # engine up, load flowing
                worker = q.get_run(run_id, db).worker_pid
                srv = psutil.Process(server.pid)
                w0, s0 = _cpu(_tree(worker)), _cpu([srv])
                time.sleep(args.seconds)
                w1, s1 = _cpu(_tree(worker)), _cpu([srv])
                print(f"closed: run {(w1 - w0) / args.seconds:.2f} cores, "
                      f"streamlit {(s1 - s0) / args.seconds:.2f} cores")
                with sync_playwright() as p, tempfile.TemporaryDirectory() as prof:
                    ctx = p.chromium.launch_persistent_context(
                        prof, executable_path="/usr/bin/chromium", headless=True, args=BROWSER_ARGS,
                        viewport={"width": 1500, "height": 2200})
                    ctx.new_page().goto(f"{base}/live?run={run_id}")
                    time.sleep(8)
                    chrome = [c for c in psutil.Process(os.getpid()).children(recursive=True)
                              if "chrom" in c.name().lower()]
                    w0, s0, c0 = _cpu(_tree(worker)), _cpu([srv]), _cpu(chrome)
                    time.sleep(args.seconds)
                    w1, s1, c1 = _cpu(_tree(worker)), _cpu([srv]), _cpu(chrome)
                    print(f"open:   run {(w1 - w0) / args.seconds:.2f} cores, "
                          f"streamlit {(s1 - s0) / args.seconds:.2f} cores, "
                          f"chromium {(c1 - c0) / args.seconds:.2f} cores")
                    ctx.close()
            finally:
                if run_id is not None:  # before the server goes: the worker is ours to stop
                    cancel_run(run_id, db)
                    time.sleep(5)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
