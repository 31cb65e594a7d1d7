"""Does sampling the GPU through NVML slow down what runs on it, and which call does it? (lent GPU machine)

On the H100, vLLM decoded ~7% slower at 1 and 128 concurrent streams while Melt's GPU sampler ran (4 Hz, another
process), for Melt's own load generator and for `vllm bench serve` alike (docs/PERFORMANCE.md). This places it
without vLLM: a decode-like step (Python work, then a CUDA graph of 56 small bf16 matmuls, then a sync, as a
small-model decode step is) runs in this process while a side process runs one part of Melt's sampler at its
rate. Conditions are interleaved over rounds; each prints steps/s, and the side process times every NVML call.

  python3 scripts/gpu/nvml_overhead.py --out DIR [--rounds 3] [--window 6]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CONDITIONS = ("none", "full", "nogpm", "gpm", "xid")


def side(cond: str, out: Path) -> None:
    """Run one part of Melt's sampler until SIGTERM; write per-NVML-function call counts and wall time."""
    from telemetry import nvml
    from telemetry.sampler import NvmlSource

    stats: dict = collections.defaultdict(lambda: [0, 0.0])
    real_call = nvml._call

    def timed(fn_name, *args, key=None):
        t = time.perf_counter()
        try:
            return real_call(fn_name, *args, key=key)
        finally:
            s = stats[fn_name]
            s[0] += 1
            s[1] += time.perf_counter() - t

    nvml._call = timed
    done = []
    signal.signal(signal.SIGTERM, lambda *_: done.append(1))
    src = NvmlSource([0])
    reader = src.readers[0]
    watch = None
    if cond == "nogpm":
        reader.gpm_ok = False
    if cond in ("full", "nogpm", "xid"):
        watch = nvml.XidWatcher(lambda *a: None, gpus=[0])
        watch.start()
    t0 = time.perf_counter()
    n = 0
    while not done:
        if cond in ("full", "nogpm"):
            src.read()
        elif cond == "gpm":
            reader._gpm_metrics()
        n += 1
        time.sleep(max(0.0, t0 + n * 0.25 - time.perf_counter()))  # 4 Hz, as a sweep samples
    if watch is not None:
        watch.stop()
    out.write_text(json.dumps({k: {"calls": v[0], "ms_per_call": round(1000 * v[1] / v[0], 3)}
                               for k, v in sorted(stats.items()) if v[0]}))


def step_rate(window_s: float, graph, busy_s: float) -> dict:
    import torch

    times = []
    end = time.perf_counter() + window_s
    while time.perf_counter() < end:
        t = time.perf_counter()
        while time.perf_counter() - t < busy_s:  # the scheduler / input preparation of a decode step
            pass
        graph.replay()
        torch.cuda.synchronize()                 # sampling needs the logits: every step syncs
        times.append(time.perf_counter() - t)
    times.sort()
    return {"steps_per_s": round(len(times) / sum(times), 1), "p50_ms": round(1000 * times[len(times) // 2], 3),
            "p99_ms": round(1000 * times[int(len(times) * 0.99)], 3), "max_ms": round(1000 * times[-1], 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/out")))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--window", type=float, default=6.0)
    ap.add_argument("--busy-ms", type=float, default=1.0)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.manual_seed(0)
    layers = [(torch.randn(1024, 3072, device="cuda", dtype=torch.bfloat16) / 32,
               torch.randn(3072, 1024, device="cuda", dtype=torch.bfloat16) / 32) for _ in range(28)]
    x = torch.randn(8, 1024, device="cuda", dtype=torch.bfloat16)

    def fwd():
        h = x
        for w1, w2 in layers:
            h = torch.relu(h @ w1) @ w2
        return h

    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        for _ in range(3):
            fwd()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fwd()
    step_rate(2.0, graph, a.busy_ms / 1000)  # warm-up (clocks, caches)
    results = []
    for r in range(a.rounds):
        order = CONDITIONS[r % len(CONDITIONS):] + CONDITIONS[:r % len(CONDITIONS)]
        for cond in order:
            calls = a.out / f"calls_{cond}_{r}.json"
            proc = None
            if cond != "none":
                proc = subprocess.Popen([sys.executable, __file__, "--side", cond, str(calls)], cwd=ROOT)
                time.sleep(1.5)  # NVML init and the first samples happen before the window
            res = step_rate(a.window, graph, a.busy_ms / 1000)
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=20)
            res.update(cond=cond, round=r,
                       nvml_calls=json.loads(calls.read_text()) if calls.exists() else None)
            calls.unlink(missing_ok=True)
            results.append(res)
            print(json.dumps({k: res[k] for k in ("cond", "round", "steps_per_s", "p50_ms", "p99_ms", "max_ms")}),
                  flush=True)
    (a.out / "nvml_overhead.json").write_text(json.dumps(results, indent=2))
    base = [x["steps_per_s"] for x in results if x["cond"] == "none"]
    b = sum(base) / len(base)
    print("| condition | steps/s (mean of rounds) | vs none |\n|---|---|---|")
    for cond in CONDITIONS:
        v = [x["steps_per_s"] for x in results if x["cond"] == cond]
        m = sum(v) / len(v)
        print(f"| {cond} | {m:,.1f} | {100 * (m / b - 1):+.1f}% |")
    full = next((x["nvml_calls"] for x in results if x["cond"] == "full" and x["nvml_calls"]), {})
    print("NVML calls in 'full' (ms per call):", json.dumps({k: v["ms_per_call"] for k, v in full.items()}))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--side":
        side(sys.argv[2], Path(sys.argv[3]))
    else:
        main()
