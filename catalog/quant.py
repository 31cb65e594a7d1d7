"""Bytes per weight parameter and per KV element by dtype / quantization scheme: one table for the planner
(bench/memory.py) and the simulator (engines/sim/model.py), below both (catalog imports nothing of Melt's).

WEIGHT_ONLY: schemes that store weights small but compute in the activation dtype (dequantized in the kernel), so
a step streams fewer bytes but runs bf16 FLOPs; fp8 (FP8_COMPUTE) also computes in fp8 on the tensor cores.
"""
from __future__ import annotations


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
