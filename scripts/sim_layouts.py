#!/usr/bin/env python3
"""The "8xH200 layouts (simulated)" table of docs/PERFORMANCE.md: the four h200x8 recipes predicted by the simulator
in virtual time (bench.sim_layout; ~20 s of CPU for all of them). Every figure is SIMULATED, none measured.

    python scripts/sim_layouts.py [--levels 100,1000] [--price 3.79] [--input-len 512 --output-len 128]

Per layout: the planner's KV tokens per instance (bench.plan, the figure each sim instance is given), the box's
peak output tok/s over the levels, TTFT p50 / mean at each level, the node's modelled GPU power and J per output
token at the peak level, and $ per 1M output tokens for all the node's GPUs at the price per GPU-hour (bench.cost;
default the catalog's H200 price).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.sim_layout import predict  # noqa: E402
from catalog import get_gpu  # noqa: E402
from catalog.recipes import load_recipe  # noqa: E402

LAYOUTS = ("h200x8-tp8", "h200x8-two-70b-tp4", "h200x8-eight-8b", "h200x8-hybrid")


def _kv(pred) -> str:
    insts = pred.instances
    if len(insts) > 2 and len({(i.tp, i.kv_tokens) for i in insts}) == 1:  # identical replicas: say it once
        return f"{len(insts)}x TP={insts[0].tp}: {insts[0].kv_tokens:,} each"
    return "; ".join(f"{i.name} TP={i.tp}: {i.kv_tokens:,}" for i in insts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", default="100,1000")
    ap.add_argument("--price", type=float, help="$ per GPU-hour (default: the recipe GPU's catalog price)")
    ap.add_argument("--input-len", type=int, default=512)
    ap.add_argument("--output-len", type=int, default=128)
    a = ap.parse_args(argv)
    levels = [int(x) for x in a.levels.split(",")]
    head = (["layout (SIMULATED)", "planner KV tokens per instance", "peak out tok/s"]
            + [f"TTFT p50 / mean ms @{c:,}" for c in levels]
            + ["node GPU power W @peak", "J / out token @peak", "$ / 1M out tok @peak"])
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for name in LAYOUTS:
        recipe = load_recipe(name)
        price = a.price if a.price is not None else get_gpu(recipe.gpu).price_per_hour
        preds = [predict(recipe, c, input_len=a.input_len, output_len=a.output_len) for c in levels]
        peak = max(preds, key=lambda p: p.output_tok_s)
        print("| " + " | ".join([name, _kv(peak), f"{peak.output_tok_s:,.0f} (c={peak.concurrency:,})"]
                                + [f"{p.ttft_p50_ms:,.0f} / {p.ttft_mean_ms:,.0f}" for p in preds]
                                + [f"{peak.power_w:,.0f}", f"{peak.joules_per_token:.2f}",
                                   f"{peak.usd_per_million(price):.2f} (at ${price:.2f}/GPU-h)"]) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
