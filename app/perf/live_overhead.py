"""Does watching a run slow it down? The same sim sweep with the Live page open in headless Chromium vs closed.

    .venv/bin/python -m app.perf.live_overhead [--levels 16,64,256] [--duration 20] [--pairs 2]

Runs closed/open/closed/open... (alternating, so drift on a shared machine hits both sides), each through the
real path: bench.runs.start_run (background worker + sim engine), with a `streamlit run app/main.py` server up
the whole time. "open" = a Chromium tab on /live?run=ID for the whole sweep (the page polls the database every
second and redraws 12 charts). Prints output tok/s per level and the open/closed ratio. Target: within 3%.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _config(levels: list[int], duration: float, name: str):
    from bench.config import RunConfig

    return RunConfig.model_validate({
        "name": name, "engine": {"kind": "sim", "model": "Qwen/Qwen3-0.6B", "sim_gpu": "H100-SXM-80GB"},
        "gpu": "H100-SXM-80GB", "levels": levels,
        "workload": {"duration_s": duration, "input_len": {"min": 512, "max": 512},
                     "output_len": {"min": 128, "max": 128}}})


def _wait_done(run_id: int, db: Path, timeout: float) -> None:
    from storage import queries as q

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not q.get_run(run_id, db).run.active:
            return
        time.sleep(1)
    raise TimeoutError(f"run {run_id} still active after {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m app.perf.live_overhead", description=__doc__.splitlines()[0])
    ap.add_argument("--levels", default="16,64,256")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per level")
    ap.add_argument("--pairs", type=int, default=2)
    args = ap.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]

    from playwright.sync_api import sync_playwright

    from app.perf.server import BROWSER_ARGS, dashboard
    from bench.runs import start_run
    from storage import queries as q

    tmp = Path(tempfile.mkdtemp(prefix="melt-overhead-"))
    db = tmp / "melt.db"
    os.environ.update(MELT_DB=str(db), MELT_HOME=str(tmp / "home"))
    results: dict[str, list[dict[int, float]]] = {"closed": [], "open": []}
    try:
        with dashboard() as (_server, base):
            timeout = len(levels) * args.duration * 4 + 120
            with tempfile.TemporaryDirectory() as prof, sync_playwright() as p:
                for i in range(args.pairs * 2):
                    mode = "closed" if i % 2 == 0 else "open"
                    run_id = start_run(_config(levels, args.duration, f"overhead {mode} {i // 2 + 1}"), db)
                    ctx = None
                    if mode == "open":
                        ctx = p.chromium.launch_persistent_context(prof, executable_path="/usr/bin/chromium",
                                                                   headless=True, args=BROWSER_ARGS,
                                                                   viewport={"width": 1500, "height": 2200})
                        ctx.new_page().goto(f"{base}/live?run={run_id}")
                    try:
                        _wait_done(run_id, db, timeout)
                    finally:
                        if ctx is not None:
                            ctx.close()
                    d = q.get_run(run_id, db)
                    assert d.run.status == "completed", (d.run.status, d.run.error)
                    tok = {lv.concurrency: lv.output_tok_s for lv in d.levels}
                    results[mode].append(tok)
                    print(f"run #{run_id} ({mode}): " + ", ".join(f"C={c}: {v:,.0f} tok/s" for c, v in tok.items()),
                          flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{'conc':>6} {'closed tok/s':>13} {'open tok/s':>11} {'open/closed':>12}")
    worst = 0.0
    for c in levels:
        closed = statistics.mean(r[c] for r in results["closed"])
        opened = statistics.mean(r[c] for r in results["open"])
        worst = max(worst, abs(opened / closed - 1))
        print(f"{c:>6} {closed:>13,.0f} {opened:>11,.0f} {opened / closed:>12.3f}")
    print(f"\nlargest difference: {worst:.1%} (mean of {args.pairs} runs each; {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
