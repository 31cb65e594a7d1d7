"""Soak benchmark (a script, not a test): many concurrent streams for a long time against the simulator, watching
the client for leaks.

One CLI sweep (`python -m bench sweep --engine sim ... --levels N --duration S`) runs as a subprocess, exactly as a
user would run it; every --every seconds a sampler reads, over the CLI process and its load-generator shards (the
sim engine and its guardian are left out), the resident memory and open file descriptors, and the engine's RSS
apart, and the machine's 1-minute load average (the box may be shared). At the end it prints that series, latency
per minute of send time from the stored request rows (drift: TTFT, TPOT and E2E percentiles, errors), the level's
counts (errors should be 0; every request is accounted for: sent = ok + err), the history database's size (file +
WAL) and every process the sampler saw that is still running once the CLI has exited (should be none). Flat client
RSS and fds over the run = no leak.

    .venv/bin/python -m bench.perf.soak                          # 10,000 streams for 10 minutes
    .venv/bin/python -m bench.perf.soak --streams 500 --minutes 1 --every 5

It takes every core it can get (the simulator and the client share the machine): run it on an idle box.
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import psutil

from bench.metrics import stats, tpot_ms

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
        self.seen: dict[tuple[int, float], str] = {}   # (pid, create time) -> command of every process sampled
        self._done = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self._done.wait(self.every):
            client, engine = _client_and_engine(self.cli)
            try:
                kids = self.cli.children(recursive=True)
            except psutil.Error:
                kids = []
            for k in kids:
                try:
                    self.seen.setdefault((k.pid, k.create_time()), " ".join(k.cmdline())[:100])
                except psutil.Error:
                    pass
            rss, fds = _sum(client)
            self.rows.append({"t_s": round(time.monotonic() - self.t0), "client_procs": len(client),
                              "client_rss_mb": round(rss, 1), "client_fds": fds,
                              "engine_rss_mb": round(_sum(engine)[0], 1), "load1": round(os.getloadavg()[0], 2)})

    def stop(self) -> list[dict]:
        self._done.set()
        self.join(timeout=10)
        return self.rows


def left_running(seen: dict[tuple[int, float], str]) -> list[str]:
    """The processes among `seen` ((pid, create time) -> command) that still run: same pid, same start time."""
    left = []
    for (pid, created), cmd in seen.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                left.append(f"pid {pid}: {cmd}")
        except psutil.Error:
            pass
    return left


def drift(db: Path, window_s: float = 60.0) -> list[dict]:
    """Latency per `window_s` of send time (measured requests only, warm-up left out), from the stored rows:
    sent, errors, TTFT p50/p99, TPOT p50/p99 and E2E p50 (ms) per window, as bench.metrics defines them."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT send_ns, ok, ttft_ms, e2e_ms, output_tokens FROM requests WHERE NOT warmup "
                           "ORDER BY send_ns").fetchall()
    finally:
        con.close()
    if not rows:
        return []
    t0, out, buckets = rows[0][0], [], {}
    for send_ns, ok, ttft, e2e, n_out in rows:
        buckets.setdefault(int((send_ns - t0) / 1e9 // window_s), []).append(
            SimpleNamespace(ok=bool(ok), ttft_ms=ttft, e2e_ms=e2e, output_tokens=n_out))
    for i in sorted(buckets):
        b = buckets[i]
        ok = [r for r in b if r.ok]
        ttft, tpot = stats([r.ttft_ms for r in ok if r.ttft_ms is not None]), stats(
            [t for t in (tpot_ms(r) for r in ok) if t is not None])
        e2e = stats([r.e2e_ms for r in ok if r.e2e_ms is not None])
        out.append({"from_s": round(i * window_s), "sent": len(b), "err": len(b) - len(ok),
                    "ttft_p50": ttft["p50"], "ttft_p99": ttft["p99"], "tpot_p50": tpot["p50"],
                    "tpot_p99": tpot["p99"], "e2e_p50": e2e["p50"]})
    return out


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.1f}"


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
    time.sleep(2)  # the CLI has returned; give anything it signalled on the way out a moment to go
    left = left_running(sampler.seen)
    print(f"{'t s':>6} {'procs':>5} {'client RSS MiB':>15} {'client fds':>10} {'engine RSS MiB':>15} {'load 1m':>8}")
    for r in rows:
        print(f"{r['t_s']:>6} {r['client_procs']:>5} {r['client_rss_mb']:>15,.1f} {r['client_fds']:>10,} "
              f"{r['engine_rss_mb']:>15,.1f} {r['load1']:>8.2f}")
    print(f"{'from s':>6} {'sent':>7} {'err':>5} {'TTFT p50':>10} {'TTFT p99':>10} {'TPOT p50':>9} {'TPOT p99':>9} "
          f"{'E2E p50':>10}   (ms, by send time)")
    for w in (drift(db) if db.exists() else []):
        print(f"{w['from_s']:>6} {w['sent']:>7,} {w['err']:>5,} {_ms(w['ttft_p50']):>10} {_ms(w['ttft_p99']):>10} "
              f"{_ms(w['tpot_p50']):>9} {_ms(w['tpot_p99']):>9} {_ms(w['e2e_p50']):>10}")
    doc = json.loads(stdout) if stdout.strip() else {}
    size = sum(f.stat().st_size for f in out.glob("soak.db*") if f.is_file())
    for lv in doc.get("levels", []):
        print(f"level c={lv.get('concurrency')}: status {lv.get('status')}, sent {lv.get('n_sent'):,}, ok "
              f"{lv.get('n_ok'):,}, errors {lv.get('n_err'):,}, output {lv.get('output_tok_s') or 0:,.0f} tok/s, "
              f"client CPU {lv.get('client_cpu_pct') or 0:.0f}%")
    print(f"run status {doc.get('status')}; database {size / 2**20:,.1f} MiB (file + WAL) for "
          f"{sum(lv.get('n_sent') or 0 for lv in doc.get('levels', [])):,} request rows")
    print("left running after the CLI exited: " + ("; ".join(left) if left else "nothing"))
    return 0 if doc.get("status") == "completed" and not left else 1


if __name__ == "__main__":
    sys.exit(main())
