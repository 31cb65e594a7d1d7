"""Bytes per weight parameter and per KV element by dtype / quantization scheme: one table for the planner
(bench/memory.py) and the simulator (engines/sim/model.py), below both (catalog imports nothing of Melt's).

Also the two runtime terms both size from a model's shape (`step_activation_bytes_per_token`,
`online_quant_transient_gb`), fitted against vLLM's own memory profile on the H200.

WEIGHT_ONLY: schemes that store weights small but compute in the activation dtype (dequantized in the kernel), so
a step streams fewer bytes but runs bf16 FLOPs; fp8 (FP8_COMPUTE) also computes in fp8 on the tensor cores.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from catalog.models import ModelSpec


# Bytes per weight parameter by --dtype. None / "auto" falls back to the model's own dtype.
DTYPE_BYTES = {
    "float32": 4.0, "fp32": 4.0, "float": 4.0,
    "float16": 2.0, "fp16": 2.0, "half": 2.0,
    "bfloat16": 2.0, "bf16": 2.0,
}
# Bytes per parameter by --quantization. 4-bit schemes carry group scales/zeros (~0.5 bit per weight
# at group size 128), hence 4.5 bits rather than 4.
QUANT_BYTES = {
    "fp8": 1.0, "fbgemm_fp8": 1.0, "modelopt": 1.0, "int8": 1.0, "w8a8": 1.0, "w8a16": 1.0,
    "smoothquant": 1.0, "compressed-tensors": 1.0, "experts_int8": 1.0,
    "awq": 0.5625, "awq_marlin": 0.5625, "gptq": 0.5625, "gptq_marlin": 0.5625, "int4": 0.5625,
    "w4a16": 0.5625, "marlin": 0.5625, "bitsandbytes": 0.5625, "nvfp4": 0.5625, "mxfp4": 0.5625,
    "modelopt_fp4": 0.5625,
    # GGUF (llama.cpp ggml-common.h): a Q4_0 block is 32 weights in 16 bytes + an fp16 scale = 18 bytes (4.5 bits);
    # a Q8_0 block is 32 int8 + an fp16 scale = 34 bytes (8.5 bits). Qwen3-30B-A3B-Q8_0.gguf: 30.5 B x 1.0625 = 32.4 GB.
    "gguf_q4_0": 0.5625, "gguf_q8_0": 1.0625,
}
KV_DTYPE_BYTES = {"fp8": 1.0, "fp8_e4m3": 1.0, "fp8_e5m2": 1.0, "fp8_inc": 1.0, "int8": 1.0}

FP8_COMPUTE = frozenset({"fp8", "fbgemm_fp8", "modelopt"})
WEIGHT_ONLY = frozenset(q for q in QUANT_BYTES if q not in FP8_COMPUTE)


def stored_weight_bytes(total_params: float, embedding_params: float, bytes_per_param: float,
                        quantization: str | None, act_bytes: float = 2.0) -> float:
    """Bytes the weights take. vLLM's fp8 / int8 / AWQ / GPTQ schemes quantize the linear layers only: the token
    embedding and an untied LM head (`embedding_params`) stay in the activation dtype (measured on the H200, vLLM
    0.25.1 fp8, dummy weights: Gemma-3-27B 26.84 GiB = 28.8 GB, Qwen3-30B-A3B 29.06 GiB = 31.2 GB, where 1 byte
    for every parameter gives 27.4 / 30.5 GB). GGUF files quantize the embedding too: every parameter at the
    scheme's size. The planner (bench/memory.py) and the simulator (engines/sim/model.py) both size weights here."""
    q = (quantization or "").lower()
    if q and not q.startswith("gguf") and 0 < embedding_params < total_params:
        return (total_params - embedding_params) * bytes_per_param + embedding_params * act_bytes
    return total_params * bytes_per_param


GB = 1e9
# Quantizations vLLM applies at load time to a bf16 checkpoint ("online"): the catalog's checkpoints are bf16, so
# `quantization: fp8` is one of them. Its profile run keeps one layer's MLP weights in bf16 besides the fp8 ones
# (measured, see online_quant_transient_gb).
ONLINE_QUANT = frozenset({"fp8"})


def step_activation_bytes_per_token(model: ModelSpec, act_dtype_bytes: float, tp: int = 1) -> float:
    """Activation bytes of one scheduler step per batched token: hidden states (4 x hidden) plus the MLP's
    intermediates. Dense: gate and up (2 x intermediate). MoE: per routed copy of the token (experts_per_token of
    them) the fused gate-up output (2 x the per-expert width) and the down projection's output (hidden) before the
    weighted sum. Fitted on the H200 (vLLM 0.25.1, docs/data/h200_host_d/kv_probe): Qwen3-30B-A3B's profile run grew
    69.7 KB per batched token from 2,048 to 16,384; this gives 73.7 KB (the old dense-style 2 x 8 x 768 gave 41.0)."""
    if model.num_experts:
        mlp = (model.experts_per_token or 1) * (2 * model.intermediate_size + model.hidden_size)
    else:
        mlp = 2 * model.intermediate_size
    return (4 * model.hidden_size + mlp / tp) * act_dtype_bytes


def online_quant_transient_gb(model: ModelSpec, quantization: str | None, act_dtype_bytes: float,
                              tp: int = 1) -> float:
    """What vLLM's memory profile holds beyond weights, activations and graphs when it quantizes a bf16 checkpoint
    at load time: one layer's MLP weights in the activation dtype. MoE: every expert's gate, up and down
    (3 x experts x hidden x per-expert width); dense: the fused gate-up (2 x hidden x intermediate).
    Measured on the H200 (vLLM 0.25.1, dummy weights), what vLLM's profile holds beyond the planner's other terms
    (bench/memory.py: 1.0 GB runtime, CUDA graphs included, + activations + sampler logits): Gemma-3-27B fp8 0.44 GB
    against this 0.46 GB; Qwen3-30B-A3B fp8 1.93 GB (the intercept of three --max-num-batched-tokens settings on one
    line) against this 1.21 GB, the other 0.7 GB unexplained (about vLLM's logged CUDA-graph estimate, 0.64 GiB).
    The mechanism (the bf16 copy kept while a layer is quantized) is inferred from those sizes, not traced in vLLM's
    source. Quantized checkpoints (AWQ, GPTQ, pre-quantized fp8) should not pay it, but the planner charges it for
    every `quantization: fp8`: it cannot tell a pre-quantized fp8 checkpoint from online quantization."""
    if not quantization or quantization.lower() not in ONLINE_QUANT:
        return 0.0
    h, w = model.hidden_size, model.intermediate_size
    per_layer = 3 * model.num_experts * h * w if model.num_experts else 2 * h * w
    return per_layer * act_dtype_bytes / tp / GB
