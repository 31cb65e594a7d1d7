"""vLLM's own KV-cache sizing for one model at several --max-num-batched-tokens, on the lent GPU (issue #12).

  python3 scripts/gpu/kv_probe.py --model Qwen/Qwen3-30B-A3B --quantization fp8 --mem-fraction 0.4502 \
      --max-model-len 4096 --mbt 2048,8192 --out DIR

Each setting is launched through Melt's own adapter and supervisor (dummy weights, the argv a recipe instance gets,
plus `--max-num-batched-tokens N`), watched until vLLM logs its KV-cache size, and stopped there: the CUDA-graph
capture and warm-up after it do not change the figure, and skipping them saves a minute per start. The lines the
planner test reads (weights, CUDA-graph estimate, available KV memory, KV tokens) go to DIR/kv_facts.txt in the
format of docs/data/h200_mix/engine_kv_facts.txt, one block per setting; each engine log goes to DIR too.
Two settings separate the profile run's per-token activations (the slope) from what does not scale with them.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from engines.registry import build_plan  # noqa: E402
from engines.spec import EngineSpec  # noqa: E402
from engines.supervisor import EngineProcess, free_port  # noqa: E402

FACT_LINES = ("gpu_memory_utilization", "Model loading took", "Estimated CUDA graph memory", "Available KV cache memory",
              "GPU KV cache size", "max_num_batched_tokens", "Initial profiling/warmup run")


def probe(spec: EngineSpec, out: Path, name: str, timeout_s: float) -> str:
    work = out / f"work_{name}"
    work.mkdir(parents=True, exist_ok=True)
    log = out / f"engine_{name}.log"
    plan = build_plan(spec, "127.0.0.1", free_port(), work)
    proc = EngineProcess(plan, log)
    proc.start()
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < timeout_s:
            text = log.read_text(errors="replace") if log.exists() else ""
            if "GPU KV cache size" in text or not proc.alive():
                break
            time.sleep(1)
    finally:
        report = proc.stop()
    print(f"{name}: {time.monotonic() - t0:.0f} s to the KV line; stop {report}", flush=True)
    text = log.read_text(errors="replace")
    keep = []
    for line in text.splitlines():
        for key in FACT_LINES:
            if key in line:
                m = re.search(r"'gpu_memory_utilization': [0-9.]+", line) if key == "gpu_memory_utilization" else None
                keep.append(m.group(0) if m else line.split("] ", 1)[-1][:300])
                break
    return f"== {name}\n" + "\n".join(dict.fromkeys(keep)) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--quantization")
    ap.add_argument("--mem-fraction", type=float, required=True)
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--mbt", default="2048,8192", help="comma-separated --max-num-batched-tokens settings")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per start to wait for the KV line")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    facts = a.out / "kv_facts.txt"
    for mbt in (int(x) for x in a.mbt.split(",")):
        spec = EngineSpec(kind="vllm", model=a.model, dummy_weights=True, quantization=a.quantization,
                          mem_fraction=a.mem_fraction, max_model_len=a.max_model_len,
                          engine_cmd=[sys.executable, "-m", "vllm.entrypoints.cli.main"],
                          extra_args=["--max-num-batched-tokens", str(mbt)])
        block = probe(spec, a.out, f"mbt{mbt}", a.timeout)
        with facts.open("a") as f:  # appended per start: a call cut short keeps the settings it finished
            f.write(block)
        print(block, flush=True)


if __name__ == "__main__":
    main()
