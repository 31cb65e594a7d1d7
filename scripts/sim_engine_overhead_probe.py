"""The simulator on host c (2026-12-03) with the engine core's CPU overheads scaled down: does a faster host's engine
loop explain the sim's misses there? (docs/PERFORMANCE.md, "The simulator against host c").

  PYTHONPATH=. .venv/bin/python scripts/sim_engine_overhead_probe.py [--tokenize-share 0.4]

Virtual time (seconds). SIMULATED against measured: Melt's text runs of docs/data/h200_compare_c (fit_host.fit).
Not a fit: it prints the error per level for a few (step, per-sequence) overheads. Host c's profile carries its
whole text-prompt cost per output token (no token-id runs to split it); --tokenize-share S moves the share S of the
c=128 per-request cost to tokenization (charged when a request arrives), the rest stays per token.
"""
from __future__ import annotations

import argparse

from catalog import get_gpu, get_model
from engines.sim import fit_host
from engines.sim.host import load_host_profile
from engines.sim.model import DEFAULT_PROFILE, PerfModel
from engines.sim.scheduler import simulate_closed_loop

HOST = "h200-host-c-2026-12-03"
OVERHEADS = ((0.9e-3, 20e-6), (0.4e-3, 20e-6), (0.4e-3, 10e-6), (0.3e-3, 8e-6))   # the first: the engine defaults before 2026-12-04


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenize-share", type=float, default=0.0)
    share = ap.parse_args().tokenize_share
    host, real = load_host_profile(HOST), fit_host.fit(HOST)["levels"]
    moved = share * host.per_token_light_s     # per output token, moved to the prompt's tokenization
    host = host.model_copy(update={"tokenize_per_prompt_token_s": moved * fit_host.OUT_LEN / fit_host.IN_LEN,
                                   "per_token_light_s": host.per_token_light_s - moved,
                                   "per_token_heavy_s": host.per_token_heavy_s - moved})
    print(f"tokenize share {share:g}: tokenize {host.tokenize_per_prompt_token_s * 1e6:.2f} us/prompt token, "
          f"per token {host.per_token_light_s * 1e6:.1f} / {host.per_token_heavy_s * 1e6:.1f} us\n")
    print("| step overhead | per-seq overhead | conc | sim tok/s | real tok/s | err | sim TTFT ms | real TTFT ms | err |"
          " sim TPOT ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for step, per in OVERHEADS:
        prof = DEFAULT_PROFILE.model_copy(update={"step_overhead_s": step, "per_seq_overhead_s": per})
        perf = PerfModel(get_gpu("H200-141GB"), get_model("Qwen/Qwen3-0.6B"), profile=prof)
        for c in fit_host.LEVELS:
            _, _, tps, ttft, _ = real[(c, "melt-text")]
            s = simulate_closed_loop(perf, c, fit_host.REQUESTS[c], fit_host.IN_LEN, fit_host.OUT_LEN, host=host,
                                     text_prompt=True)
            print(f"| {step * 1e3:.1f} ms | {per * 1e6:.0f} us | {c} | {s.output_throughput:,.0f} | {tps:,.0f} |"
                  f" {s.output_throughput / tps - 1:+.1%} | {s.mean_ttft_ms:,.1f} | {ttft:,.1f} |"
                  f" {s.mean_ttft_ms / ttft - 1:+.1%} | {s.mean_tpot_ms:.2f} |")


if __name__ == "__main__":
    main()
