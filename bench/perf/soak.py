"""Soak benchmark (a script, not a test): many concurrent streams for a long time against the simulator, watching
the client for leaks.

One CLI sweep (`python -m bench sweep --engine sim ... --levels N --duration S`) runs as a subprocess, exactly as a
user would run it; every --every seconds a sampler reads, over the CLI process and its load-generator shards (the
sim engine and its guardian are left out), the resident memory and open file descriptors, and the engine's RSS
apart. At the end it prints that series, the level's counts (errors should be 0; every request is accounted for:
sent = ok + err) and the history database's size (file + WAL). Flat client RSS and fds over the run = no leak.

    .venv/bin/python -m bench.perf.soak                          # 10,000 streams for 10 minutes
    .venv/bin/python -m bench.perf.soak --streams 500 --minutes 1 --every 5

It takes every core it can get (the simulator and the client share the machine): run it on an idle box.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]


def _client_and_engine(cli: psutil.Process) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """The CLI and its shards (client) vs the sim engine; the guardian is neither."""
    client, engine = [cli], []
    for p in cli.children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "engines.sim" in cmd:
            engine.append(p)
        elif "engines.guardian" not in cmd:
            client.append(p)
    return client, engine


def _sum(procs: list[psutil.Process]) -> tuple[float, int]:
    rss = fds = 0
    for p in procs:
        try:
            rss += p.memory_info().rss
            fds += p.num_fds()
        except psutil.Error:
            pass
    return rss / 2**20, fds


class Sampler(threading.Thread):
    def __init__(self, cli: psutil.Process, every: float):
        super().__init__(daemon=True)
        self.cli, self.every, self.rows = cli, every, []
        self._done = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self._done.wait(self.every):
            client, engine = _client_and_engine(self.cli)
            rss, fds = _sum(client)
            self.rows.append({"t_s": round(time.monotonic() - self.t0), "client_procs": len(client),
                              "client_rss_mb": round(rss, 1), "client_fds": fds,
                              "engine_rss_mb": round(_sum(engine)[0], 1)})

    def stop(self) -> list[dict]:
        self._done.set()
        self.join(timeout=10)
        return self.rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.perf.soak")
    ap.add_argument("--streams", type=int, default=10_000, help="concurrent streams (one level)")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    ap.add_argument("--output-len", type=int, default=256)
    ap.add_argument("--out", type=Path, help="directory for the history database (default: a temp dir)")
    a = ap.parse_args(argv)
    out = a.out or Path(tempfile.mkdtemp(prefix="melt-soak-"))
    out.mkdir(parents=True, exist_ok=True)
    db = out / "soak.db"
    argv_cli = [sys.executable, "-m", "bench", "--db", str(db), "sweep", "--engine", "sim", "--gpu", "H100-SXM-80GB",
                "--model", "Qwen/Qwen3-0.6B", "--levels", str(a.streams), "--duration", str(a.minutes * 60),
                "--input-len", "128", "--output-len", str(a.output_len), "--telemetry-hz", "1", "--json"]
    print(f"soak: {a.streams:,} streams for {a.minutes:g} min, history {db}", flush=True)
    p = subprocess.Popen(argv_cli, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    sampler = Sampler(psutil.Process(p.pid), a.every)
    sampler.start()
    try:
        stdout, _ = p.communicate(timeout=a.minutes * 60 + 900)
    finally:
        if p.poll() is None:
            p.terminate()
            p.wait(60)
    rows = sampler.stop()
    print(f"{'t s':>6} {'procs':>5} {'client RSS MiB':>15} {'client fds':>10} {'engine RSS MiB':>15}")
    for r in rows:
        print(f"{r['t_s']:>6} {r['client_procs']:>5} {r['client_rss_mb']:>15,.1f} {r['client_fds']:>10,} "
              f"{r['engine_rss_mb']:>15,.1f}")
    doc = json.loads(stdout) if stdout.strip() else {}
    size = sum(f.stat().st_size for f in out.glob("soak.db*") if f.is_file())
    for lv in doc.get("levels", []):
        print(f"level c={lv.get('concurrency')}: status {lv.get('status')}, sent {lv.get('n_sent'):,}, ok "
              f"{lv.get('n_ok'):,}, errors {lv.get('n_err'):,}, output {lv.get('output_tok_s') or 0:,.0f} tok/s, "
              f"client CPU {lv.get('client_cpu_pct') or 0:.0f}%")
    print(f"run status {doc.get('status')}; database {size / 2**20:,.1f} MiB (file + WAL) for "
          f"{sum(lv.get('n_sent') or 0 for lv in doc.get('levels', [])):,} request rows")
    return 0 if doc.get("status") == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
