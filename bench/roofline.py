"""Roofline share: how much of the GPU's roofline a measured decode throughput reaches.

Pure arithmetic over the catalog (assets/gpus.yaml bandwidth and peak, assets/models.yaml shapes); no efficiencies,
no calibration (the simulator's engines/sim/model.py has those): this is the ideal hardware bound, so a share far
below 100% says the engine or its frontend, not the GPU, is the limit.

One decode step of `batch` sequences at a mean context of `context` tokens reads
    bytes = active params x bytes/param  +  batch x context x KV bytes per token
and computes
    flops = batch x (2 x active params  +  4 x layers x heads x head_dim x context)     (GEMMs + attention)
so it cannot take less than t = max(bytes / bandwidth, flops / peak), and the roofline throughput is batch / t
output tok/s. The share of a measured T tok/s is T / (batch / t) = max(bandwidth share, compute share), where the
bandwidth share is the bytes/s the measured step rate implies over the catalog bandwidth (and likewise for FLOPs).
Prefill is not counted (decode-only bound: a share is a little optimistic for long prompts). Quantized weights
(fp8, AWQ, ...) and an fp8 KV cache read fewer bytes: the level's bound uses the engine's settings.

The batch of a measured level is the mean number of requests in flight, by Little's law req/s x mean E2E (closed
loop: about the concurrency), and the context the mean prompt plus half the mean output.
"""
from __future__ import annotations

from catalog.models import GPUSpec, ModelSpec


def _peak_flops(gpu: GPUSpec, bytes_per_param: float, fp8_compute: bool | None = None) -> float:
    fp8 = bytes_per_param == 1.0 if fp8_compute is None else fp8_compute
    tflops = gpu.fp8_tflops if fp8 and gpu.fp8_tflops else gpu.bf16_tflops
    return tflops * 1e12


def _stored_bytes_per_param(model: ModelSpec, quantization: str | None) -> tuple[float, bool]:
    """(mean stored bytes per parameter, fp8 compute?) for `quantization` (None: bf16), through the planner's and
    the sim's table (catalog.quant.stored_weight_bytes: fp8 / AWQ / GPTQ leave the embedding and LM head in bf16).
    Not bench.memory.weight_bytes_per_param (one scheme's bytes, raising on an unknown one): a roofline never raises.
    Without this an fp8 run was held to the bf16 roofline: twice the bytes, a share above 100%."""
    from catalog.quant import FP8_COMPUTE, QUANT_BYTES, stored_weight_bytes

    q = (quantization or "").lower()
    if q not in QUANT_BYTES:
        return 2.0, False
    total = model.total_params_b * 1e9
    return stored_weight_bytes(total, model.embedding_params(), QUANT_BYTES[q], q) / total, q in FP8_COMPUTE


def roofline(gpu: GPUSpec, model: ModelSpec, *, batch: float, context: float, output_tok_s: float | None = None,
             bytes_per_param: float = 2.0, kv_bytes_per_elem: float = 2.0, gpus: int = 1,
             fp8_compute: bool | None = None) -> dict:
    """The roofline of one decode step and, given a measured `output_tok_s`, the share of it achieved. `gpus`
    GPUs (tensor/data parallel) add up their bandwidth and peak."""
    if batch <= 0 or context < 0:
        raise ValueError(f"batch must be > 0 and context >= 0, got {batch}, {context}")
    params = model.active_params_b * 1e9
    weight_bytes = params * bytes_per_param
    kv_bytes = batch * context * model.kv_bytes_per_token(kv_bytes_per_elem)
    step_bytes = weight_bytes + kv_bytes
    step_flops = batch * (2.0 * params + 4.0 * model.num_layers * model.num_attention_heads * model.head_dim * context)
    bandwidth = gpu.mem_bandwidth_gbs * 1e9 * gpus
    peak = _peak_flops(gpu, bytes_per_param, fp8_compute) * gpus
    t_mem, t_compute = step_bytes / bandwidth, step_flops / peak
    t_step = max(t_mem, t_compute)
    out = {"gpu": gpu.id, "model": model.id, "batch": batch, "context": context,
           "step_bytes": step_bytes, "step_flops": step_flops, "gpus": gpus, "bandwidth_gbs": bandwidth / 1e9,
           "peak_tflops": peak / 1e12, "bound": "memory" if t_mem >= t_compute else "compute",
           "roofline_tok_s": batch / t_step, "share": None, "bandwidth_share": None, "compute_share": None}
    if output_tok_s is not None and output_tok_s >= 0:
        steps_s = output_tok_s / batch
        out.update(bandwidth_share=steps_s * step_bytes / bandwidth, compute_share=steps_s * step_flops / peak)
        out["share"] = max(out["bandwidth_share"], out["compute_share"])
    return out


def _mean(summary: dict, key: str) -> float | None:
    v = (summary.get(key) or {}).get("mean")
    return float(v) if v is not None else None


def level_roofline(summary: dict, gpu_id: str | None, model_id: str | None, *, steady: bool = True,
                   gpus: int = 1, quantization: str | None = None, kv_cache_dtype: str | None = None) -> dict | None:
    """The roofline share of one stored level (its summary JSON), or None when the GPU or model is not in the
    catalog or the level has no throughput. Uses the steady-state tok/s when the level has a steady window. The
    engine's `quantization` and `kv_cache_dtype` set the bytes a step must read (and fp8's peak)."""
    from catalog import CatalogError, get_gpu, get_model

    if not gpu_id or not model_id or not summary:
        return None
    try:
        gpu, model = get_gpu(gpu_id), get_model(model_id)
    except CatalogError:
        return None
    st = summary.get("steady") or {}
    use_steady = steady and st.get("window") and st.get("output_tok_s") is not None
    tok_s = st["output_tok_s"] if use_steady else summary.get("output_tok_s")
    req_s = st.get("req_s") if use_steady else summary.get("req_s")
    e2e = _mean(st, "e2e_ms") if use_steady else None
    e2e = e2e if e2e is not None else _mean(summary, "e2e_ms")
    if not tok_s:
        return None
    batch = req_s * e2e / 1e3 if req_s and e2e else float(summary.get("concurrency") or 1)
    if summary.get("concurrency"):
        batch = min(batch, float(summary["concurrency"]))  # a closed loop never has more in flight
    batch = max(batch, 1e-9)
    prompt = _mean(summary, "input_tokens_per_req") or 0.0
    output = _mean(summary, "output_tokens_per_req") or 0.0
    from catalog.quant import KV_DTYPE_BYTES

    bpp, fp8 = _stored_bytes_per_param(model, quantization)
    kv = KV_DTYPE_BYTES.get((kv_cache_dtype or "").lower(), 2.0)
    r = roofline(gpu, model, batch=batch, context=prompt + output / 2, output_tok_s=tok_s, gpus=gpus,
                 bytes_per_param=bpp, kv_bytes_per_elem=kv, fp8_compute=fp8)
    r["steady"] = bool(use_steady)
    return r
