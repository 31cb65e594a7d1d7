"""Will it fit? Weights + KV cache of a catalog model against the selected GPUs, before anything launches.

Pure arithmetic over catalog numbers, modelled on how vLLM sizes its KV cache: the engine may use
`mem_fraction` of each GPU's memory; from that budget it subtracts the weight shard, the CUDA
context / CUDA graphs and the activation peak of one scheduler step; what is left becomes KV cache.
SGLang (--mem-fraction-static) and TRT-LLM (free_gpu_memory_fraction) differ in detail, so this is an
estimate for the Launch page's bar, not a promise; the engine's own log has the real number.

Units: GB = 10^9 bytes everywhere (the catalog's unit). NVML's MiB are converted by the caller.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from catalog.models import GPUSpec, ModelSpec
from catalog.quant import (DTYPE_BYTES, KV_DTYPE_BYTES, QUANT_BYTES, online_quant_transient_gb,
                           step_activation_bytes_per_token, stored_weight_bytes)

GB = 1e9

# Bytes per parameter / element: catalog/quant.py (shared with the simulator).
_DTYPE_BYTES, _QUANT_BYTES, _KV_DTYPE_BYTES = DTYPE_BYTES, QUANT_BYTES, KV_DTYPE_BYTES

# CUDA context, NCCL buffers, CUDA graphs: what nvidia-smi shows beyond torch's allocations. vLLM
# on an H100 typically reports 0.5-1.5 GB here; 1.0 GB is the middle of that range.
RUNTIME_OVERHEAD_GB = 1.0
# Tokens in one scheduler step (vLLM's default max_num_batched_tokens with chunked prefill).
STEP_TOKENS = 8192


def batched_tokens_from_args(args: list[str]) -> int | None:
    """The step size an instance's extra engine flags set (vLLM's --max-num-batched-tokens N or =N), else None."""
    for i, a in enumerate(args):
        if a == "--max-num-batched-tokens" and i + 1 < len(args) and args[i + 1].isdigit():
            return int(args[i + 1])
        if a.startswith("--max-num-batched-tokens=") and a.split("=", 1)[1].isdigit():
            return int(a.split("=", 1)[1])
    return None


def weight_bytes_per_param(model: ModelSpec, dtype: str | None = None, quantization: str | None = None) -> float:
    """Bytes per weight for the chosen dtype/quantization (quantization wins: it is what is stored)."""
    if quantization:
        q = quantization.lower()
        if q not in _QUANT_BYTES:
            raise ValueError(f"unknown quantization {quantization!r}; known: {', '.join(sorted(_QUANT_BYTES))}")
        return _QUANT_BYTES[q]
    d = (dtype or "auto").lower()
    if d == "auto":
        d = model.dtype.lower()
    if d not in _DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; known: auto, {', '.join(sorted(_DTYPE_BYTES))}")
    return _DTYPE_BYTES[d]


def weight_gb(model: ModelSpec, dtype: str | None = None, quantization: str | None = None, tp: int = 1) -> float:
    """Weight shard per GPU (GB): catalog.quant.stored_weight_bytes (the embedding stays bf16 under fp8/AWQ/GPTQ)."""
    act = _DTYPE_BYTES.get((dtype or model.dtype).lower(), 2.0)
    return stored_weight_bytes(model.total_params_b * 1e9, model.embedding_params(),
                               weight_bytes_per_param(model, dtype, quantization), quantization, act) / GB / tp


def kv_bytes_per_elem(model: ModelSpec, kv_cache_dtype: str | None = None, dtype: str | None = None) -> float:
    """KV cache element size: fp8 variants are 1 byte, 'auto' follows the activation dtype (never quantized)."""
    k = (kv_cache_dtype or "auto").lower()
    if k != "auto":
        if k not in _KV_DTYPE_BYTES:
            raise ValueError(f"unknown KV-cache dtype {kv_cache_dtype!r}; known: auto, {', '.join(sorted(_KV_DTYPE_BYTES))}")
        return _KV_DTYPE_BYTES[k]
    d = (dtype or "auto").lower()
    if d == "auto":
        d = model.dtype.lower()
    return _DTYPE_BYTES.get(d, 2.0)


@dataclass(frozen=True)
class MemoryFit:
    """Per-GPU breakdown (GB) of one replica's GPUs, plus what it means for the workload."""

    gpu_total_gb: float
    n_gpus: int
    tp: int
    dp: int
    mem_fraction: float
    weights_gb: float          # weight shard on each GPU
    overhead_gb: float         # runtime + activation peak on each GPU
    kv_gb: float               # KV cache on each GPU (negative = does not fit)
    unused_gb: float           # (1 - mem_fraction) of the GPU, left to others
    kv_bytes_per_token: float  # per GPU (this GPU's share of the KV heads)
    kv_tokens: int             # KV capacity of one replica, in tokens
    max_model_len: int
    need_kv_tokens: int | None  # the workload's largest level, per replica (None = not given)
    warnings: list[str] = field(default_factory=list)
    max_seqs: int = 256        # sequences the engine runs at once (max_num_seqs): given, or the engine's default

    @property
    def fits(self) -> bool:
        """Weights load and at least one full-length sequence fits in the KV cache (vLLM's own startup check)."""
        return self.kv_gb > 0 and self.kv_tokens >= self.max_model_len

    @property
    def workload_fits(self) -> bool | None:
        """Every request of the largest level can be resident at once (else it queues: lower throughput)."""
        if self.need_kv_tokens is None:
            return None
        return self.fits and self.kv_tokens >= self.need_kv_tokens

    @property
    def max_concurrent_full_len(self) -> int:
        """How many max_model_len sequences fit at once per replica (vLLM logs this as 'maximum concurrency')."""
        return max(0, self.kv_tokens // self.max_model_len)

    def segments(self) -> list[tuple[str, float]]:
        """(label, GB) per GPU for a stacked bar. Sums to gpu_total_gb when it fits; past it when it does not."""
        used = self.weights_gb + self.overhead_gb
        kv = max(0.0, self.kv_gb)
        return [
            ("weights", self.weights_gb),
            ("runtime + activations", self.overhead_gb),
            ("KV cache", kv),
            ("unused", max(0.0, self.gpu_total_gb - used - kv)),
        ]


BIG_GPU_GB = 70.0


def default_max_seqs(gpu_total_gb: float) -> int:
    """vLLM's default max_num_seqs for its API server: 1,024 on GPUs of >= 70 GB (H100, H200, B200, A100-80GB),
    else 256. The simulator uses the same rule (engines/sim/model.py)."""
    return 1024 if gpu_total_gb >= BIG_GPU_GB else 256


def estimate_fit(
    model: ModelSpec,
    gpu: GPUSpec | float,
    *,
    n_gpus: int = 1,
    tp: int = 1,
    dp: int = 1,
    mem_fraction: float | None = None,
    dtype: str | None = None,
    quantization: str | None = None,
    kv_cache_dtype: str | None = None,
    max_model_len: int | None = None,
    max_seqs: int | None = None,
    max_concurrency: int | None = None,
    tokens_per_request: int | None = None,
    max_batched_tokens: int | None = None,
) -> MemoryFit:
    """Estimate one replica's memory on each of its `tp` GPUs.

    gpu: a catalog GPUSpec or the per-GPU memory in GB (detected GPUs). max_concurrency and
    tokens_per_request (input max + output max) describe the workload's largest level; DP replicas
    share that load evenly and vLLM caps resident requests at max_seqs. max_batched_tokens: the engine's
    --max-num-batched-tokens (default STEP_TOKENS), the tokens of the step its profile run sizes activations for.
    """
    total_gb = gpu.memory_gb if isinstance(gpu, GPUSpec) else float(gpu)
    if total_gb <= 0:
        raise ValueError("GPU memory must be positive")
    frac = 0.9 if mem_fraction is None else float(mem_fraction)  # vLLM's default gpu_memory_utilization
    if not 0 < frac <= 1:
        raise ValueError(f"memory fraction must be in (0, 1], got {frac}")
    if tp < 1 or dp < 1 or n_gpus < 1:
        raise ValueError("tp, dp and n_gpus must be >= 1")
    warnings: list[str] = []
    if tp * dp != n_gpus:
        warnings.append(f"TP {tp} x DP {dp} = {tp * dp} GPUs, but {n_gpus} selected")
    if model.num_attention_heads % tp:
        warnings.append(f"{model.num_attention_heads} attention heads do not divide by TP {tp}: the engine will refuse")

    weights_gb = weight_gb(model, dtype, quantization, tp)
    # TP splits KV heads across GPUs; with more GPUs than KV heads each GPU keeps one (replicated) head.
    kv_heads_per_gpu = math.ceil(model.num_kv_heads / tp)
    kv_elem = kv_bytes_per_elem(model, kv_cache_dtype, dtype)
    # Padded attention groups included (hybrid sliding-window models: ModelSpec.kv_alloc_layers).
    kv_per_token = 2 * model.kv_alloc_layers() * kv_heads_per_gpu * model.head_dim * kv_elem

    seqs = max_seqs or default_max_seqs(total_gb)
    act_dtype_bytes = _DTYPE_BYTES.get((dtype or model.dtype).lower(), 2.0)
    # Activation peak of one step (step_activation_bytes_per_token x the batched tokens), plus fp32 logits of every
    # running sequence (the sampler's peak), plus what online quantization keeps (online_quant_transient_gb).
    step_tokens = max_batched_tokens or STEP_TOKENS
    act_gb = (step_tokens * step_activation_bytes_per_token(model, act_dtype_bytes, tp)
              + seqs * model.vocab_size * 4 / tp) / GB + online_quant_transient_gb(model, quantization, act_dtype_bytes, tp)
    overhead_gb = RUNTIME_OVERHEAD_GB + act_gb

    kv_gb = frac * total_gb - weights_gb - overhead_gb
    kv_tokens = max(0, int(kv_gb * GB // kv_per_token)) if kv_gb > 0 else 0
    mml = max_model_len or model.max_position_embeddings
    if mml > model.max_position_embeddings:
        warnings.append(f"max model len {mml} exceeds the model's {model.max_position_embeddings} positions")

    need = None
    if max_concurrency and tokens_per_request:
        resident = min(math.ceil(max_concurrency / dp), seqs)
        need = resident * tokens_per_request
    if weights_gb + overhead_gb > frac * total_gb:
        warnings.append(
            f"weights ({weights_gb:.1f} GB) + runtime ({overhead_gb:.1f} GB) exceed {frac:.0%} of {total_gb:.0f} GB per GPU")
    elif kv_tokens < mml:
        warnings.append(f"KV cache holds {kv_tokens:,} tokens, less than one {mml:,}-token sequence: lower max model len")
    elif need is not None and kv_tokens < need:
        warnings.append(f"the largest level needs ~{need:,} KV tokens per replica, the cache holds {kv_tokens:,}: "
                        "requests will queue or be preempted")
    if max_concurrency and math.ceil(max_concurrency / dp) > seqs:
        given = "as set" if max_seqs else "the engine's default"
        warnings.append(f"the largest level ({max_concurrency:,} users, {math.ceil(max_concurrency / dp):,} per "
                        f"replica) is more than the {seqs:,} sequences the engine runs at once (max_num_seqs, {given}):"
                        " the rest wait in its queue, so that level measures queueing as much as decoding")
    return MemoryFit(
        gpu_total_gb=total_gb, n_gpus=n_gpus, tp=tp, dp=dp, mem_fraction=frac,
        weights_gb=weights_gb, overhead_gb=overhead_gb, kv_gb=kv_gb,
        unused_gb=(1 - frac) * total_gb, kv_bytes_per_token=kv_per_token, kv_tokens=kv_tokens,
        max_model_len=mml, need_kv_tokens=need, warnings=warnings, max_seqs=seqs,
    )
