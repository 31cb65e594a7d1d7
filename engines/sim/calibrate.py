"""python -m engines.sim.calibrate: the simulator against a real measurement, in virtual time (no sockets, seconds).

REFERENCE: vLLM 0.25.1 serving Qwen/Qwen3-0.6B (bf16) on one H100 80GB SXM, `vllm bench serve`-style closed loop,
512 input / 128 output tokens, ignore_eos. The simulator must land within +-25 % on all six numbers (unit test:
tests/unit/test_sim_calibration.py). Higher concurrencies have no reference; they are printed to show the shape:
throughput saturates near max_num_seqs / KV capacity and TTFT grows with queueing once the running set is full.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from catalog import get_gpu, get_model
from engines.sim.model import PerfModel, SimKnobs
from engines.sim.scheduler import LevelStats, simulate_closed_loop

GPU_ID = "H100-SXM-80GB"
MODEL_ID = "Qwen/Qwen3-0.6B"
INPUT_LEN, OUTPUT_LEN = 512, 128
TOLERANCE = 0.25


@dataclass(frozen=True)
class Reference:
    concurrency: int
    output_throughput: float  # tok/s
    mean_tpot_ms: float
    mean_ttft_ms: float


REFERENCE = (
    Reference(1, 466.0, 2.0, 17.0),
    Reference(16, 5330.0, 2.6, 58.0),
)
SHAPE_LEVELS = (128, 512, 1024, 10000)


def reference_model(knobs: SimKnobs | None = None) -> PerfModel:
    return PerfModel(get_gpu(GPU_ID), get_model(MODEL_ID), knobs)


def requests_for(concurrency: int) -> int:
    """Enough requests that start-up and drain effects are small: 10 waves at low concurrency, 2 at high."""
    return max(100, 10 * concurrency) if concurrency <= 128 else 2 * concurrency


def run_level(perf: PerfModel, concurrency: int) -> LevelStats:
    return simulate_closed_loop(perf, concurrency, requests_for(concurrency), INPUT_LEN, OUTPUT_LEN)


def compare(perf: PerfModel | None = None) -> list[tuple[Reference, LevelStats, dict[str, float]]]:
    """(reference, simulated, relative error per metric) for every reference level."""
    perf = perf or reference_model()
    out = []
    for ref in REFERENCE:
        sim = run_level(perf, ref.concurrency)
        err = {
            "output_throughput": sim.output_throughput / ref.output_throughput - 1,
            "mean_tpot_ms": sim.mean_tpot_ms / ref.mean_tpot_ms - 1,
            "mean_ttft_ms": sim.mean_ttft_ms / ref.mean_ttft_ms - 1,
        }
        out.append((ref, sim, err))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engines.sim.calibrate", description=__doc__.splitlines()[0])
    p.add_argument("--levels", type=int, nargs="*", default=list(SHAPE_LEVELS),
                   help="extra concurrency levels to print (no reference)")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    perf = reference_model()
    print(f"SIMULATED {MODEL_ID} on {GPU_ID}, {INPUT_LEN} in / {OUTPUT_LEN} out, closed loop, virtual time")
    d = perf.describe()
    print(f"model: kv capacity {d['kv_capacity_tokens']} tokens, max_num_seqs {d['max_num_seqs']}, "
          f"max_num_batched_tokens {d['max_num_batched_tokens']}, gemm efficiency {d['gemm_efficiency']}")
    print()
    head = f"{'conc':>6} {'reqs':>6} | {'out tok/s':>21} | {'TPOT ms':>17} | {'TTFT ms':>21} | ok"
    print("reference = vLLM 0.25.1 on a real H100; cells are sim (ref, error)")
    print(head)
    print("-" * len(head))
    worst = 0.0
    for ref, sim, err in compare(perf):
        worst = max(worst, *(abs(v) for v in err.values()))
        ok = all(abs(v) <= TOLERANCE for v in err.values())
        print(f"{ref.concurrency:>6} {sim.requests:>6} | "
              f"{sim.output_throughput:>7.0f} ({ref.output_throughput:>5.0f} {err['output_throughput']:+5.0%}) | "
              f"{sim.mean_tpot_ms:>5.2f} ({ref.mean_tpot_ms:>4.1f} {err['mean_tpot_ms']:+4.0%}) | "
              f"{sim.mean_ttft_ms:>7.1f} ({ref.mean_ttft_ms:>5.0f} {err['mean_ttft_ms']:+5.0%}) | "
              f"{'yes' if ok else 'NO'}")
    print()
    print("shape (no reference)")
    print(f"{'conc':>6} {'reqs':>6} | {'out tok/s':>9} | {'TPOT ms':>7} | {'TTFT ms':>9} | {'p99 TTFT':>9} | "
          f"{'max run':>7} | {'preempt':>7}")
    for c in a.levels:
        s = run_level(perf, c)
        print(f"{c:>6} {s.requests:>6} | {s.output_throughput:>9.0f} | {s.mean_tpot_ms:>7.2f} | "
              f"{s.mean_ttft_ms:>9.1f} | {s.p99_ttft_ms:>9.1f} | {s.max_running:>7} | {s.preemptions:>7}")
    print()
    print(f"worst reference error {worst:.1%} (tolerance {TOLERANCE:.0%}); "
          f"computed in {time.perf_counter() - t0:.1f} s")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    raise SystemExit(main())
