"""The GPU side of a step, measured without an engine (issue #13): how long one forward's linear layers take at M tokens.

For each model, every layer's four bf16 GEMMs (qkv, o, gate_up, down; shapes from catalog.ModelSpec) with a distinct
weight set per layer (so the weights stream from DRAM as in a real forward, not from L2), captured in one CUDA graph
per M and replayed; the lm_head GEMM at M sampled rows on its own; a DRAM streaming copy (achieved bandwidth); and
causal FlashAttention (torch SDPA) prefill of B x 512-token prompts. Times are CUDA-event means of the replays.

What it is for: the sim's step model (engines/sim/model.py) computes a linear layer's time as
max(bytes / achieved bandwidth, FLOPs / (peak x GEMM efficiency)); these numbers give that efficiency at each M on a
real H200, from the GPU alone, so the serving runs that check the sim are not also what it is fitted to.

Run on the device machine (needs torch with CUDA): python3 scripts/gpu/gemm_probe.py --out $OUT/gemm_probe.json
"""
from __future__ import annotations

import argparse
import json
import time

MODELS = {  # hidden, intermediate, heads, kv heads, head_dim, layers, vocab (catalog/models, HF config.json)
    "Qwen/Qwen3-0.6B": (1024, 3072, 16, 8, 128, 28, 151936),
    "Qwen/Qwen3-8B": (4096, 12288, 32, 8, 128, 36, 151936),
}
MS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


def _time_graph(torch, fn, reps: int = 10) -> float:
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
        fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    g.replay()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        g.replay()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / reps / 1e3


def main() -> None:
    import torch
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    dev = torch.device("cuda")
    bf = torch.bfloat16
    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "date": time.strftime("%FT%TZ"),
           "ms": list(MS), "models": {}}

    # DRAM: copy 4 GiB (read + write 8 GiB)
    x = torch.empty(2 ** 31, dtype=bf, device=dev)
    y = torch.empty_like(x)
    t = _time_graph(torch, lambda: y.copy_(x), reps=10)
    out["copy_bytes"] = 2 * x.numel() * 2
    out["copy_s"] = t
    out["copy_gbs"] = out["copy_bytes"] / t / 1e9
    del x, y
    print(f"copy: {out['copy_gbs']:.0f} GB/s", flush=True)

    for name, (h, inter, nh, nkv, hd, layers, vocab) in MODELS.items():
        shapes = {"qkv": (h, (nh + 2 * nkv) * hd), "o": (nh * hd, h), "gate_up": (h, 2 * inter), "down": (inter, h)}
        ws = [{k: torch.randn(kk, nn, dtype=bf, device=dev) * 0.01 for k, (kk, nn) in shapes.items()}
              for _ in range(layers)]
        lm = torch.randn(h, vocab, dtype=bf, device=dev) * 0.01
        weight_bytes = 2 * layers * sum(kk * nn for kk, nn in shapes.values())
        rows = []
        for m in MS:
            xs = {k: torch.randn(m, kk, dtype=bf, device=dev) for k, (kk, nn) in shapes.items()}
            outs = {k: torch.empty(m, nn, dtype=bf, device=dev) for k, (kk, nn) in shapes.items()}

            def body():
                for w in ws:
                    for k in shapes:
                        torch.matmul(xs[k], w[k], out=outs[k])
            t_body = _time_graph(torch, body, reps=5 if m >= 2048 else 10)
            per = {}
            for k in shapes:  # one GEMM kind over every layer's weights
                def one(k=k):
                    for w in ws:
                        torch.matmul(xs[k], w[k], out=outs[k])
                per[k] = _time_graph(torch, one, reps=5)
            xl = torch.randn(min(m, 1024), h, dtype=bf, device=dev)
            ol = torch.empty(min(m, 1024), vocab, dtype=bf, device=dev)
            t_lm = _time_graph(torch, lambda: torch.matmul(xl, lm, out=ol), reps=10)
            flops = 2 * m * weight_bytes / 2
            rows.append({"m": m, "body_s": t_body, "per_kind_s": per, "lm_head_rows": min(m, 1024), "lm_head_s": t_lm,
                         "body_flops": flops, "body_tflops": flops / t_body / 1e12,
                         "body_gbs": weight_bytes / t_body / 1e9})
            print(f"{name} M={m}: body {t_body * 1e3:.3f} ms ({flops / t_body / 1e12:.0f} TF/s, "
                  f"{weight_bytes / t_body / 1e9:.0f} GB/s), lm_head {t_lm * 1e3:.3f} ms", flush=True)
            del xs, outs, xl, ol
        attn = []
        for b in (1, 4, 16):
            q = torch.randn(b, nh, 512, hd, dtype=bf, device=dev)
            k = torch.randn(b, nkv, 512, hd, dtype=bf, device=dev)
            v = torch.randn(b, nkv, 512, hd, dtype=bf, device=dev)
            f = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            try:
                ta = _time_graph(torch, f, reps=20) * layers
            except Exception as e:  # noqa: BLE001 - a backend that refuses: recorded, not fatal
                ta = None
                print(f"attention b={b}: {e}", flush=True)
            attn.append({"batch": b, "prompt": 512, "all_layers_s": ta})
        out["models"][name] = {"weight_bytes_body": weight_bytes, "rows": rows, "attention_prefill": attn}
        del ws, lm
        torch.cuda.empty_cache()
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
