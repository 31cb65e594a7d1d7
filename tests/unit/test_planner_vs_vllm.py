"""The planner's KV-cache tokens against what vLLM 0.25.1 logged on the H200 (issue #12's check).

Data: docs/data/h200_mix/engine_kv_facts.txt, the lines vLLM printed at start for the dwani.ai LLM pair (Gemma-3-27B
and Qwen3-30B-A3B, fp8, one H200, dummy weights) and two Qwen3-0.6B replicas at 0.42 each; the planner is asked
for the same instance at the fraction Melt passed (`--gpu-memory-utilization`), on the card's NVML total.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.memory import estimate_fit
from catalog import get_model

FACTS = Path(__file__).resolve().parents[2] / "docs/data/h200_mix/engine_kv_facts.txt"
H200_NVML_GB = 143_771 * 2**20 / 1e9
MODEL = {"gemma": ("google/gemma-3-27b-it", "fp8"), "qwen3": ("Qwen/Qwen3-30B-A3B", "fp8"),
         "replica-0": ("Qwen/Qwen3-0.6B", None), "replica-1": ("Qwen/Qwen3-0.6B", None)}
# Qwen3-30B-A3B: vLLM's profile run of the MoE needs 4.1 GB of runtime + activations, the planner models 2.0 GB
# (docs/ARCHITECTURE.md, "Not modelled"); within 5% for the others.
TOLERANCE = {"qwen3": 0.08}


def _facts() -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for block in FACTS.read_text().split("== ")[1:]:
        name, _, body = block.partition("\n")
        frac = float(re.search(r"gpu_memory_utilization': ([0-9.]+)", body).group(1))
        tokens = int(re.search(r"GPU KV cache size: ([0-9,]+) tokens", body).group(1).replace(",", ""))
        weights = float(re.search(r"Model loading took ([0-9.]+) GiB", body).group(1)) * 2**30 / 1e9
        out[name.strip()] = {"fraction": frac, "tokens": tokens, "weights_gb": weights}
    return out


@pytest.mark.parametrize("name", sorted(MODEL))
def test_planner_kv_tokens_match_vllm_on_the_h200(name):
    fact = _facts()[name]
    model_id, quant = MODEL[name]
    fit = estimate_fit(get_model(model_id), H200_NVML_GB, mem_fraction=fact["fraction"], quantization=quant,
                       max_model_len=4096)
    assert fit.kv_tokens == pytest.approx(fact["tokens"], rel=TOLERANCE.get(name, 0.05))
    # the weights vLLM loaded, the embedding kept in bf16 under fp8: within 1.5% (all parameters at 1 byte, the old
    # rule, is 4.9% short for Gemma-3-27B and 2.2% for Qwen3-30B-A3B)
    assert fit.weights_gb == pytest.approx(fact["weights_gb"], rel=0.015)


def test_gemma3_sliding_window_padding_is_what_vllm_logged():
    gemma = get_model("google/gemma-3-27b-it")
    assert gemma.attention_layer_counts() == (10, 52)
    assert gemma.kv_alloc_layers() == 70                   # vLLM: "Add 8 padding layers"
    assert "Add 8 padding layers" in FACTS.read_text()
    assert get_model("Qwen/Qwen3-0.6B").kv_alloc_layers() == 28
