#!/usr/bin/env python3
"""GPU telemetry check for the lent GPU machine (needs only pynvml + stdlib; torch for the load).

    PYTHONUNBUFFERED=1 python3 scripts/gpu_telemetry_check.py --out "$OUT"     # then: python3 -m pytest -m gpu tests/gpu

Samples one GPU at 4 Hz with Melt's TelemetrySampler while a bf16 matmul loop (a separate process pinned to the GPU
by UUID) loads it for ~60 s, then ~20 s idle. Writes the series and a summary to --out and prints:
util/power under load vs idle, energy-counter delta vs ∫power dt (instantaneous and averaged), clocks, temperatures,
decoded clocks-event (throttle) reasons, which NVML signals this GPU/driver answers, the health verdict, and the
sampler's own CPU cost.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from telemetry import nvml  # noqa: E402
from telemetry.energy import decode_throttle, summarize_window  # noqa: E402
from telemetry.gpus import gpus_report  # noqa: E402
from telemetry.health import verdict  # noqa: E402
from telemetry.sampler import ROW_KEYS, NvmlSource, TelemetrySampler  # noqa: E402

LOAD = r"""
import sys, time, torch
dur = float(sys.argv[1])
n = 8192
a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
for _ in range(3):
    c = a @ b
torch.cuda.synchronize()
print("LOAD_START", time.time_ns(), flush=True)
t0, k = time.time(), 0
while time.time() - t0 < dur:
    for _ in range(20):
        c = a @ b
    torch.cuda.synchronize()
    k += 20
el = time.time() - t0
print("LOAD_END", time.time_ns(), f"{k * 2 * n**3 / el / 1e12:.0f}", flush=True)
"""

S = 1_000_000_000


class TimedSource(NvmlSource):
    """NvmlSource that also records how long each read takes (wall), to report the per-tick NVML cost."""

    def __init__(self, gpus):
        super().__init__(gpus)
        self.read_s: list[float] = []

    def read(self):
        t = time.perf_counter()
        rows = super().read()
        self.read_s.append(time.perf_counter() - t)
        return rows


def pct(a, b):
    return None if a is None or b in (None, 0) else 100.0 * (a - b) / b


def fmt(v, nd=1):
    return "n/a" if v is None else f"{v:.{nd}f}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpu", default="0", help="NVML index or UUID")
    ap.add_argument("--hz", type=float, default=4.0)
    ap.add_argument("--pre-idle-s", type=float, default=5.0)
    ap.add_argument("--load-s", type=float, default=60.0)
    ap.add_argument("--idle-s", type=float, default=20.0)
    ap.add_argument("--out", default=os.environ.get("OUT", "out"))
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    ok, reason = nvml.nvml_status()
    print(reason)
    if not ok:
        return 2
    report = gpus_report()
    print(report)
    (out / "gpus.txt").write_text(report)
    gpu = int(a.gpu) if a.gpu.isdigit() else a.gpu
    facts0 = nvml.health_facts(gpu)
    idx, uuid = facts0["index"], facts0["uuid"]

    xids: list[tuple] = []
    xw = nvml.XidWatcher(lambda g, x, t: xids.append((g, x, t)), gpus=[gpu])
    xid_ok = xw.start()
    print(f"XID watcher: {'registered on GPU(s) ' + str(xw.registered) if xid_ok else 'NOT started: ' + xw.reason}")

    rows: list[dict] = []
    lock = threading.Lock()

    def on_batch(batch):
        with lock:
            rows.extend(batch)

    src = TimedSource([gpu])
    smp = TelemetrySampler(src, hz=a.hz, on_batch=on_batch, batch_s=1.0)
    t_run0 = time.time_ns()
    smp.start()
    time.sleep(a.pre_idle_s)

    # The load runs in its own process, pinned to the same GPU by UUID (NVML indices != CUDA order in general).
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=uuid)
    proc = subprocess.Popen([sys.executable, "-c", LOAD, str(a.load_s)], stdout=subprocess.PIPE, text=True, env=env)
    marks: dict[str, list[str]] = {}
    procs_seen = None
    for line in proc.stdout:
        parts = line.split()
        if parts and parts[0] in ("LOAD_START", "LOAD_END"):
            marks[parts[0]] = parts[1:]
            if parts[0] == "LOAD_START":
                time.sleep(2)
                procs_seen = nvml.gpu_processes(gpu)
    proc.wait()
    if "LOAD_START" not in marks or "LOAD_END" not in marks:
        print("load process failed", proc.returncode)
        smp.stop()
        xw.stop()
        return 3
    load0, load1 = int(marks["LOAD_START"][0]), int(marks["LOAD_END"][0])
    tflops = marks["LOAD_END"][1]
    time.sleep(a.idle_s)
    stats = smp.stop()
    xstats = xw.stop()
    facts1 = nvml.health_facts(gpu)
    t_run1 = time.time_ns()

    with lock:
        series = sorted(rows, key=lambda r: r["t_ns"])
    with open(out / "telemetry_series.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(ROW_KEYS))
        w.writeheader()
        for r in series:
            w.writerow({**r, "extra": json.dumps(r["extra"]) if r["extra"] else ""})

    load = summarize_window(series, load0, load1, None)
    steady = summarize_window(series, load0 + 10 * S, load1 - 2 * S, None)
    idle = summarize_window(series, load1 + 5 * S, t_run1, None)
    whole = summarize_window(series, t_run0, t_run1, None)
    v = verdict(series, facts0, facts1, xids, [(load0, load1)])

    def g(summary):
        return summary["gpus"][0] if summary["gpus"] else {}

    L, Sd, I, W = g(load), g(steady), g(idle), g(whole)
    in_load = [r for r in series if load0 <= r["t_ns"] <= load1]
    in_idle = [r for r in series if r["t_ns"] > load1 + 5 * S]

    def mean(rs, k):
        xs = [r[k] for r in rs if r.get(k) is not None]
        return sum(xs) / len(xs) if xs else None

    print(f"\n=== GPU {idx} {facts0.get('name')} ({uuid}), driver {facts0.get('driver')}, CUDA {facts0.get('cuda')}")
    print(f"load: bf16 8192^3 matmul loop, {tflops} TFLOP/s, {(load1 - load0) / 1e9:.1f} s; "
          f"load process visible to NVML: {procs_seen}")
    print(f"{'':26s}{'load':>10s}{'steady':>10s}{'idle':>10s}")
    for label, key in (("util_gpu %", "util_gpu"), ("power_w (instant) W", "power_w"), ("power_avg_w W", "power_avg_w"),
                       ("sm_clock MHz", "sm_clock_mhz"), ("mem_clock MHz", "mem_clock_mhz"),
                       ("temp_gpu C", "temp_gpu_c"), ("temp_mem (HBM) C", "temp_mem_c"),
                       ("sm_active % (GPM)", "sm_active"), ("tensor_active % (GPM)", "tensor_active"),
                       ("dram_bw_util % (GPM)", "dram_bw_util"), ("pcie_tx kB/s", "pcie_tx_kbs"),
                       ("pcie_rx kB/s", "pcie_rx_kbs"), ("mem_used MiB", "mem_used_mb")):
        st = [r for r in in_load if r["t_ns"] >= load0 + 10 * S and r["t_ns"] <= load1 - 2 * S]
        print(f"{label:26s}{fmt(mean(in_load, key)):>10s}{fmt(mean(st, key)):>10s}{fmt(mean(in_idle, key)):>10s}")
    print(f"peak power_w {fmt(L.get('peak_power_w'))} W; max SM clock {facts0.get('max_sm_clock_mhz')} MHz; "
          f"power limit {facts0.get('power_limit_w')} W (default {facts0.get('power_limit_default_w')} W)")

    print("\nenergy over the load window (J):")
    checks = {}
    for name, s in (("load", L), ("steady", Sd), ("idle", I), ("whole run", W)):
        c, ii, ia = s.get("energy_counter_j"), s.get("energy_integrated_j"), s.get("energy_integrated_avg_j")
        checks[name] = {"counter_j": c, "integrated_instant_j": ii, "integrated_avg_j": ia,
                        "instant_vs_counter_pct": pct(ii, c), "avg_vs_counter_pct": pct(ia, c)}
        print(f"  {name:10s} counter {fmt(c)}  ∫instant dt {fmt(ii)} ({fmt(pct(ii, c), 2)}%)  "
              f"∫avg dt {fmt(ia)} ({fmt(pct(ia, c), 2)}%)")
    lc = checks["load"]
    within = lc["instant_vs_counter_pct"] is not None and abs(lc["instant_vs_counter_pct"]) <= 5
    print(f"energy counter vs ∫power_w dt within 5% over the load window: {'YES' if within else 'NO'}")

    print("\nclocks-event reasons under load (share of load time):", L.get("throttle_reasons_pct"))
    print("clocks-event reasons idle:", I.get("throttle_reasons_pct"))
    masks = sorted({r["throttle_reasons"] for r in series if r.get("throttle_reasons") is not None})
    print("masks seen:", {hex(m): decode_throttle(m) for m in masks})
    unsupported = sorted(k for k in nvml.SAMPLE_KEYS if all(r.get(k) is None for r in series))
    print("signals never answered on this GPU:", unsupported or "none")
    print("extra (last row):", series[-1].get("extra") if series else None)

    # CPU per NvmlSource.read(), energy counter every tick vs ~1 Hz (the default).
    cost = {}
    for label, interval in (("energy every tick", 0.0), ("energy ~1 Hz (default)", 1.0)):
        probe = NvmlSource([gpu], energy_interval_s=interval)
        c0 = time.thread_time()
        for _ in range(40):
            probe.read()
            time.sleep(0.25 / 8)  # 40 reads in ~1.25 s: with a 1 s interval the counter is read twice
        cost[label] = 1e3 * (time.thread_time() - c0) / 40
        probe.close()
    print("CPU per read (ms): " + ", ".join(f"{k} {v:.3f}" for k, v in cost.items()))
    reads = sorted(src.read_s)
    read_ms = {"mean": 1e3 * sum(reads) / len(reads), "p50": 1e3 * reads[len(reads) // 2],
               "max": 1e3 * reads[-1]} if reads else {}
    print(f"\nsampler: {stats['samples']} samples in {stats['wall_seconds']} s at {a.hz} Hz, late ticks "
          f"{stats['late_ticks']}, errors {stats['errors']}; CPU {stats['cpu_seconds']:.3f} s = "
          f"{stats['cpu_pct_of_core']:.2f}% of one core; NVML read per tick (wall, ms): "
          + ", ".join(f"{k} {v:.2f}" for k, v in read_ms.items()))
    print(f"XID watcher: {xstats}; XIDs seen: {xids}")
    print(f"\nVERDICT: {v['status']}")
    for r in v["reasons"]:
        print("  -", r)
    for c in v["checks"]:
        print(f"  [{c['status']:4s}] {c['id']}: {c['detail']}")

    summary = {"gpu": {"index": idx, "uuid": uuid, "name": facts0.get("name")}, "tflops": tflops,
               "load_window_ns": [load0, load1], "run_window_ns": [t_run0, t_run1], "sampler": stats,
               "nvml_read_ms": read_ms, "cpu_per_read_ms": cost, "xid": xstats, "xids": xids, "energy_checks": checks,
               "energy_within_5pct": within, "unsupported": unsupported, "procs_seen_during_load": procs_seen,
               "summaries": {"load": load, "steady": steady, "idle": idle, "whole": whole},
               "facts_start": facts0, "facts_end": facts1, "verdict": v, "nvml_errors": nvml._S.errors,
               "nvml_last_error": nvml._S.last_error}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"\nwrote {out / 'telemetry_series.csv'} ({len(series)} rows), {out / 'summary.json'}, {out / 'gpus.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
