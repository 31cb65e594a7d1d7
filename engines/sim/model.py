"""Roofline performance model of one model served by a vLLM-V1-like engine on one catalog GPU. Pure: no I/O, no clock.

What the simulator needs from hardware + architecture:
  * KV-cache capacity: (memory * mem_fraction - weights - activation reserve) / kv_bytes_per_token, in 16-token
    blocks like vLLM's paged cache.
  * the duration of one engine step, given what the scheduler packed into it:

        t_gpu = (t_compute^p + max(t_mem, t_floor)^p)^(1/p) + t_layers + t_elementwise + t_comm
        t_cpu = step_overhead + per_seq_overhead * seqs + prefill_chunk * prefill chunks + t_piecewise
        t     = max(t_gpu, t_cpu)                       (async scheduling; t_gpu + t_cpu without it)

    t_mem      = (weights streamed + KV read by attention) / (bandwidth * bw_efficiency)
    t_compute  = GEMM FLOPs / (peak * gemm_efficiency_max) + attention FLOPs / (peak * attn_efficiency)
                 with GEMM FLOPs = 2 * body params * tokens in step + 2 * lm_head params * sampled sequences
    t_floor    = num_layers * layer_floor (+ moe_layer_floor per MoE layer): a layer's four GEMMs take 25 us at one
                 token however little they read (the probe, Qwen3-0.6B), so a tiny model's linear layers cannot run
                 faster than this
    t_layers   = num_layers * nongemm_layer: attention, norms, rotary and the activation at small batch, kernels that
                 run between the GEMMs (fitted to the one GPU-bound level at hand from another model: Llama-3.1-8B at
                 one user on an H200, ITL 4.83 ms against the 3.93 ms its weights take at 3.84 TB/s: 27.5 us a layer)
    p          = roofline_p: a GEMM of M tokens is neither purely memory- nor purely compute-bound near the ridge;
                 the soft maximum with p = 2 matches bf16 cuBLAS on an H200 within 8 % at every M from 1 to 8,192 for
                 Qwen3-0.6B's and Qwen3-8B's layer shapes (scripts/gpu/gemm_probe.py, docs/data/h200_gemm_probe/),
                 where a width-dependent efficiency was off by 2-3x at large M for the small model
    t_elementwise = activation traffic of the non-GEMM kernels (norms, rotary, SiLU*mul, KV write, MoE permute);
                 those run between the GEMMs, not overlapped with them, so they add rather than max
    t_cpu      = the engine core's CPU work per step (scheduling, input prep, sampling). vLLM 0.25 schedules the
                 next step while the GPU runs this one (async scheduling, on by default), so the two overlap
    prefill_chunk = the engine core's CPU per prefill chunk in the step: a new request's setup (its block table,
                 the persistent batch's rows, its attention metadata) and the eager, piecewise-graph launches its
                 prefill forces. Host-dependent (HostProfile.engine_prefill_s): one 512-token prefill took 10.4 ms
                 from scheduling to first token on one H200 host and 5.7 ms on another, against 2.2 / 1.6 ms a decode
                 step, with the GPU's share of it ~1.5 ms. Per chunk, not per step: with per-step costs only the
                 sim's closed-loop users stayed in lockstep waves (16 prefills in one step) that real clients do not
                 keep. Every chunk of a chunked prefill pays it (a prompt longer than the step's token budget), and a
                 chunk of one token counts as a decode
    t_piecewise = a step that is not one full CUDA graph (a prefill chunk in it, or more decodes than the largest
                 captured batch, 512) runs as piecewise graphs: a fixed cost per such step. One prefill alone cannot
                 tell it from prefill_chunk; fit_host splits the two on the 16- to 512-user levels

Tensor parallel (SimKnobs.tp = N GPUs, Megatron-style as vLLM shards): each GPU holds 1/N of the weights and
ceil(kv_heads / N) KV heads, so t_mem and t_compute are one GPU's shard over one GPU's bandwidth / FLOPs, each
divided by `tp_efficiency` (the stated share of linear scaling the shards reach: smaller GEMMs, imbalance, sync);
and every layer adds two all-reduces of the step's hidden states (after attention, after the MLP), not overlapped:

    t_comm = 2 * num_layers * (allreduce_latency + 2 (N-1)/N * tokens * hidden * 2 bytes / (link * link_efficiency))

with `link` the catalog's interconnect_gbs (NVLink, per direction) or, where the catalog lists none, the stated
PCIe figure `fallback_interconnect_gbs`. The layer floor and the CPU overheads are not divided (every GPU launches
the same kernels; one scheduler). KV capacity is one GPU's KV budget over one GPU's bytes per token, or the figure
Melt's planner gives (SimKnobs.kv_cache_tokens: bench/deploy.py passes bench.memory.estimate_fit's). A DP replica
is a separate sim process (bench/deploy.py), not modelled here.

Efficiency factors (EngineProfile) are documented where defined. The GPU's come from a GEMM probe on an H200 and
one GPU-bound Llama-3.1-8B level; the CPU's (per step, per sequence, per prefill, frontend) are the H100 host's fit
(engines/sim/fit_host.py) and are replaced per host by a HostProfile. Sim against every stored real run:
`python -m engines.sim.fit_host --compare` and docs/PERFORMANCE.md; other GPU/model pairs are extrapolations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from pydantic import BaseModel, ConfigDict, Field

from catalog import CatalogError, GPUSpec, ModelSpec
from catalog.quant import (FP8_COMPUTE, QUANT_BYTES, online_quant_transient_gb, step_activation_bytes_per_token,
                           stored_weight_bytes)

GB = 1e9
# vLLM V1 picks larger scheduler defaults on big GPUs (>= 70 GB); below that it stays conservative.
_BIG_GPU_GB = 70.0


class SimKnobs(BaseModel):
    """What a user sets on the command line; mirrors the vLLM flags of the same names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mem_fraction: float = Field(default=0.9, gt=0, le=1, description="--gpu-memory-utilization")
    max_num_seqs: int | None = Field(default=None, ge=1, description="None: 1024 on >=70 GB GPUs, else 256")
    max_num_batched_tokens: int = Field(default=8192, ge=1, description="chunked-prefill token budget per step")
    max_model_len: int | None = Field(default=None, ge=16, description="None: the model's max_position_embeddings")
    block_size: int = Field(default=16, ge=1)
    gpu_share: float = Field(default=1.0, gt=0, le=1, description="share of the GPU's bandwidth and FLOPs this "
                             "instance gets (co-located instances: 1/k, bench/deploy.py)")
    weight_dtype: str = Field(default="bfloat16", description="bfloat16 | float16 | fp8 | a weight-only quantization "
                              "of catalog/quant.py (gguf_q4_0, awq, ...)")
    kv_cache_dtype: str = Field(default="auto", description="auto (= weight activations, 2 bytes) | fp8")
    tp: int = Field(default=1, ge=1, description="--tensor-parallel-size: GPUs the model is sharded over")
    kv_cache_tokens: int | None = Field(default=None, ge=1, description="KV capacity given from outside (Melt's "
                                        "planner); None: sized here from memory, weights and reserve")


class EngineProfile(BaseModel):
    """Calibration constants of the emulated engine (vLLM V1 with CUDA graphs on a Hopper-class host)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Achieved fraction of peak DRAM bandwidth for streaming weights/KV: decode kernels reach 75-85 % on H100.
    bw_efficiency: float = 0.80
    # Large-GEMM tensor-core efficiency: bf16 cuBLAS on an H200 reached 0.65-0.70 of the 989 TFLOP/s peak from
    # M = 2,048 tokens on (0.58 / 0.63 at 1,024), for a 1,024- and a 4,096-wide model alike
    # (scripts/gpu/gemm_probe.py); below that the soft roofline (roofline_p) with the memory / floor term gives the
    # measured times.
    gemm_efficiency_max: float = 0.68
    roofline_p: float = 2.0
    # FlashAttention prefill reaches roughly half of the dense tensor peak.
    attn_efficiency: float = 0.45
    # Per-layer floor of the four GEMMs at one token (CUDA graph: scripts/gpu/gemm_probe.py, Qwen3-0.6B on an H200).
    layer_floor_s: float = 25e-6
    # Per-layer time of the kernels between the GEMMs at small batch (fitted: Llama-3.1-8B, 1 user, H200).
    nongemm_layer_s: float = 27.5e-6
    # Extra floor per MoE layer: router GEMM, top-k, token align/permute, two grouped GEMMs and unpermute are about
    # six more kernels than a dense MLP, so small-batch MoE decode is slower than its bytes suggest.
    moe_layer_floor_s: float = 40e-6
    # Fixed CPU work per engine step (scheduler, input preparation, sampler) and per scheduled sequence. Host
    # profiles replace them with the host's (HostProfile.engine_*); these are the H100 reference host's.
    step_overhead_s: float = 2.081e-3
    per_seq_overhead_s: float = 0.0
    # vLLM >= 0.11 overlaps the scheduler's CPU work with the GPU's step ("Asynchronous scheduling is enabled").
    async_scheduling: bool = True
    # CPU per prefill chunk (request setup, eager attention launches), and per step that is not one full CUDA graph
    # (prefill in it, or more decodes than cudagraph_max_batch). Host-dependent (HostProfile).
    prefill_chunk_s: float = 2.483e-3
    piecewise_step_s: float = 5.793e-3
    cudagraph_max_batch: int = 512
    # Request path outside the GPU loop and the API server's modelled CPU (engines/sim/host.py): HTTP in and out,
    # IPC to the engine core and back. Added once per request before it can be scheduled. Without a host profile
    # (no API-server model) this also stands for the API server's work.
    frontend_latency_s: float = 4.43e-3
    # Memory vLLM keeps outside the KV cache besides weights: CUDA context, cuBLAS workspaces, CUDA graphs.
    non_torch_reserve_gb: float = 1.0
    # Tensor parallel (stated, NOT calibrated: no multi-GPU measurement exists yet). Share of linear scaling that N
    # shards reach on bandwidth and FLOPs: 0.9, the usual figure for TP within one NVLink node.
    tp_efficiency: float = 0.90
    # One all-reduce's fixed cost (vLLM's custom all-reduce / NCCL small-message latency inside a node: ~5-10 us).
    allreduce_latency_s: float = 8e-6
    # Share of the link's bandwidth an all-reduce reaches (NCCL bus bandwidth vs the NVLink figure).
    link_efficiency: float = 0.80
    # Interconnect assumed when the catalog lists none: PCIe Gen4 x16, per direction, GB/s.
    fallback_interconnect_gbs: float = 32.0


DEFAULT_PROFILE = EngineProfile()


@dataclass(frozen=True, slots=True)
class StepLoad:
    """What one engine step computes: per scheduled sequence (new tokens, tokens already in its KV cache),
    and how many sequences sample a token at the end of the step."""

    chunks: tuple[tuple[int, int], ...]
    sampled: int


@dataclass(frozen=True, slots=True)
class StepCost:
    duration_s: float
    t_mem_s: float
    t_compute_s: float
    t_floor_s: float
    t_elementwise_s: float
    t_overhead_s: float
    t_comm_s: float
    bytes_moved: float
    flops: float
    tokens: int

    @property
    def bound(self) -> str:
        """Which roofline term set the step time (for telemetry and debugging)."""
        m = max(self.t_mem_s, self.t_compute_s, self.t_floor_s)
        if m == self.t_compute_s:
            return "compute"
        if m == self.t_mem_s:
            return "memory"
        return "latency"


_PLAIN_DTYPES = ("bfloat16", "bf16", "float16", "fp16", "half", "auto", "float32", "fp32")


def _bytes_per_param(dtype: str) -> float:
    """Weight bytes per parameter: a dtype, fp8, or a weight-only scheme of catalog/quant.py (GGUF Q4_0 / Q8_0, AWQ,
    GPTQ, ...: small weights, activation-dtype FLOPs)."""
    d = dtype.lower()
    if d in ("bfloat16", "bf16", "float16", "fp16", "half", "auto"):
        return 2.0
    if d in ("fp8", "float8", "fp8_e4m3", "fp8_e5m2"):
        return 1.0
    if d in ("float32", "fp32"):
        return 4.0
    if d in QUANT_BYTES:
        return QUANT_BYTES[d]
    raise ValueError(f"unsupported weight dtype {dtype!r} (bfloat16, float16, float32, fp8, or a quantization: "
                     f"{', '.join(sorted(QUANT_BYTES))})")


def _fp8_compute(dtype: str) -> bool:
    return dtype.lower() in ("fp8", "float8", "fp8_e4m3", "fp8_e5m2") or dtype.lower() in FP8_COMPUTE


class PerfModel:
    """Roofline model of `model` on `gpu`. All times in seconds, sizes in bytes."""

    def __init__(self, gpu: GPUSpec, model: ModelSpec, knobs: SimKnobs | None = None,
                 profile: EngineProfile | None = None, host=None):
        """host: an engines.sim.host.HostProfile whose engine-loop overheads (if it carries them) replace the
        profile's step_overhead_s / per_seq_overhead_s."""
        self.gpu, self.model = gpu, model
        self.knobs = knobs = knobs or SimKnobs()
        p = profile or DEFAULT_PROFILE
        self.profile = p = host.engine_profile(p) if host is not None else p
        m = model

        self.weight_bpp = _bytes_per_param(knobs.weight_dtype)
        self.fp8_compute = _fp8_compute(knobs.weight_dtype)
        if self.fp8_compute and not gpu.fp8_tflops:
            raise CatalogError(f"{gpu.id} has no FP8 tensor cores; cannot serve fp8 weights")
        # "auto" follows the activation dtype, as vLLM's and the planner's (bench.memory.kv_bytes_per_elem)
        kv_elem = (1.0 if knobs.kv_cache_dtype.lower().startswith("fp8")
                   else 4.0 if knobs.weight_dtype.lower() in ("float32", "fp32", "float") else 2.0)
        # Tensor parallel: N GPUs, each with ceil(kv_heads / N) KV heads (replicated when N > kv_heads).
        self.tp = n = knobs.tp
        self.kv_heads_per_gpu = math.ceil(m.num_kv_heads / n)
        self.kv_bytes_per_token = m.kv_bytes_per_token(kv_elem) * self.kv_heads_per_gpu / m.num_kv_heads  # one GPU
        self.tp_scale = 1.0 if n == 1 else p.tp_efficiency
        if m.num_attention_heads % n:
            raise CatalogError(f"{m.num_attention_heads} attention heads of {m.id} do not divide by TP {n} "
                               "(vLLM refuses to start)")

        peak_tflops = gpu.fp8_tflops if self.fp8_compute else gpu.bf16_tflops
        # one GPU (or this instance's slice of one shared with other instances: knobs.gpu_share)
        self.peak_flops = peak_tflops * 1e12 * knobs.gpu_share
        self.bandwidth = gpu.mem_bandwidth_gbs * GB * p.bw_efficiency * knobs.gpu_share   # achieved
        self.link_gbs = gpu.interconnect_gbs or p.fallback_interconnect_gbs
        self.link_source = "catalog interconnect_gbs" if gpu.interconnect_gbs else "stated PCIe fallback"
        self.gemm_efficiency = p.gemm_efficiency_max

        # Parameter split. `emb` = vocab x hidden: the lm_head always exists as a matrix product; an untied model
        # has a second copy as the input embedding table, which is only gathered (a few rows), never streamed.
        emb = m.vocab_size * m.hidden_size
        untied_extra = 0 if m.tie_word_embeddings else emb
        active = m.active_params_b * 1e9
        self.lm_head_params = emb
        self.body_active_params = max(active - emb - untied_extra, 0.0)
        if m.num_experts and m.experts_per_token:
            per_expert = 3 * m.hidden_size * m.intermediate_size  # gate, up, down
            self.expert_params_total = m.num_layers * m.num_experts * per_expert
            expert_active = m.num_layers * m.experts_per_token * per_expert
            self.dense_streamed_params = max(active - untied_extra - expert_active, 0.0)
            self.expert_fraction = m.experts_per_token / m.num_experts
        else:
            self.expert_params_total = 0.0
            self.dense_streamed_params = active - untied_extra
            self.expert_fraction = 1.0
        # the embedding / LM head stay bf16 under fp8, AWQ, GPTQ (catalog.quant, the planner's rule)
        quant = None if knobs.weight_dtype.lower() in _PLAIN_DTYPES else knobs.weight_dtype
        self.weight_bytes_total = stored_weight_bytes(m.total_params_b * 1e9, m.embedding_params(), self.weight_bpp,
                                                      quant)
        self.weight_bytes_per_gpu = self.weight_bytes_total / n

        # Activation traffic of the non-GEMM kernels, per token per layer, 2-byte activations:
        # 2 fused add+RMSNorm (read/write residual and hidden: 8h), q/k norm + rotary and attention in/out
        # (6 (H+K) hd), SiLU*mul on the MLP (3 I per active expert), MoE token permute/unpermute (4 h per expert).
        k = m.experts_per_token or 1
        moe_permute = 4 * m.hidden_size * k if m.num_experts else 0
        hd = m.head_dim
        # Per GPU: the norms and the residual are replicated on every TP rank, attention and the MLP are sharded.
        self.act_bytes_per_token = 2.0 * m.num_layers * (
            8 * m.hidden_size + (6 * (m.num_attention_heads + m.num_kv_heads) * hd + 3 * m.intermediate_size * k
                                 + moe_permute) / n)
        self.attn_flops_coeff = 4.0 * m.num_layers * m.num_attention_heads * hd  # x new tokens x mean context
        self.layer_floor_s = m.num_layers * (p.layer_floor_s + (p.moe_layer_floor_s if m.num_experts else 0.0))
        self.nongemm_s = m.num_layers * p.nongemm_layer_s

        # Scheduler limits and KV capacity.
        self.max_num_seqs = knobs.max_num_seqs or (1024 if gpu.memory_gb >= _BIG_GPU_GB else 256)
        self.max_num_batched_tokens = knobs.max_num_batched_tokens
        self.block_size = knobs.block_size
        self.reserve_bytes = (p.non_torch_reserve_gb * GB
                              # peak activations of the largest (budget-sized) forward pass, as the planner
                              + knobs.max_num_batched_tokens * step_activation_bytes_per_token(m, 2.0, n)
                              # fp32 logits for a full batch of sampled sequences (vLLM profiles the sampler too)
                              + self.max_num_seqs * m.vocab_size * 4.0 / n
                              # one layer's bf16 MLP weights while fp8 is applied at load time
                              + online_quant_transient_gb(m, knobs.weight_dtype, 2.0, n) * GB)
        budget = gpu.memory_gb * GB * knobs.mem_fraction
        self.kv_bytes_available = budget - self.weight_bytes_per_gpu - self.reserve_bytes  # per GPU
        where = f"one {gpu.id}" if n == 1 else f"{n} x {gpu.id} (TP={n}, per GPU)"
        if self.kv_bytes_available <= 0:
            raise CatalogError(
                f"{m.id} does not fit on {where}: weights {self.weight_bytes_per_gpu / GB:.1f} GB + reserve "
                f"{self.reserve_bytes / GB:.1f} GB > {knobs.mem_fraction:.2f} x {gpu.memory_gb:g} GB "
                f"= {budget / GB:.1f} GB (try a bigger GPU, fp8 weights, more TP or a higher --mem-fraction)")
        # Capacity counts vLLM's padded attention groups (hybrid sliding-window models: ModelSpec.kv_alloc_layers).
        self.kv_alloc_bytes_per_token = self.kv_bytes_per_token * m.kv_alloc_layers() / m.num_layers
        if knobs.kv_cache_tokens is not None:  # the planner's figure (bench/memory.py), rounded down to blocks
            self.num_blocks = knobs.kv_cache_tokens // self.block_size
        else:
            self.num_blocks = int(self.kv_bytes_available // (self.kv_alloc_bytes_per_token * self.block_size))
        self.kv_capacity_tokens = self.num_blocks * self.block_size
        self.max_model_len = knobs.max_model_len or m.max_position_embeddings
        if self.max_model_len > self.kv_capacity_tokens:
            # Same refusal as vLLM: one request of max length must fit in the cache.
            raise CatalogError(
                f"max model len {self.max_model_len} is larger than the KV cache can hold "
                f"({self.kv_capacity_tokens} tokens of {m.id} on {gpu.id} at mem_fraction {knobs.mem_fraction}); "
                f"pass a smaller --max-model-len or a higher --mem-fraction")

    # -- step time

    def weights_streamed_bytes(self, tokens: int) -> float:
        """Weights read from DRAM in one step. MoE: only experts routed to by some token of the step are read;
        with uniform routing the touched fraction is 1 - (1 - k/E)^tokens."""
        params = self.dense_streamed_params
        if self.expert_params_total:
            touched = 1.0 - (1.0 - self.expert_fraction) ** max(tokens, 1)
            params += self.expert_params_total * touched
        return params * self.weight_bpp

    def step_cost(self, load: StepLoad) -> StepCost:
        p = self.profile
        tokens = 0
        kv_tokens_read = 0
        attn_tok_ctx = 0.0
        for new, cached in load.chunks:
            tokens += new
            kv_tokens_read += cached + new
            attn_tok_ctx += new * (cached + (new + 1) / 2.0)
        n = self.tp
        # One GPU's share: its weight shard and its KV heads; every GPU runs the same step at the same time.
        gpu_bytes = self.weights_streamed_bytes(tokens) / n + kv_tokens_read * self.kv_bytes_per_token
        gemm_flops = 2.0 * self.body_active_params * tokens + 2.0 * self.lm_head_params * load.sampled
        attn_flops = self.attn_flops_coeff * attn_tok_ctx
        bw, peak = self.bandwidth * self.tp_scale, self.peak_flops * n * self.tp_scale
        t_mem = gpu_bytes / bw
        t_compute = gemm_flops / (peak * self.gemm_efficiency) + attn_flops / (peak * p.attn_efficiency)
        t_floor = self.layer_floor_s
        t_elem = tokens * self.act_bytes_per_token / bw
        t_comm = self.allreduce_time(tokens)
        t_gpu = self.linear_time(t_compute, max(t_mem, t_floor)) + self.nongemm_s + t_elem + t_comm
        prefills = sum(1 for new, _ in load.chunks if new > 1)
        graphed = not prefills and len(load.chunks) <= p.cudagraph_max_batch   # decodes only, a captured size
        t_over = (p.step_overhead_s + p.per_seq_overhead_s * len(load.chunks) + p.prefill_chunk_s * prefills
                  + (0.0 if graphed else p.piecewise_step_s))
        duration = max(t_gpu, t_over) if p.async_scheduling else t_gpu + t_over
        return StepCost(duration, t_mem, t_compute, t_floor, t_elem, t_over, t_comm,
                        n * (gpu_bytes + tokens * self.act_bytes_per_token), gemm_flops + attn_flops, tokens)

    def linear_time(self, t_compute: float, t_io: float) -> float:
        """The soft roofline of a step's linear layers: (t_compute^p + t_io^p)^(1/p), p = roofline_p (2). Near the
        ridge a GEMM is neither purely compute- nor purely memory-bound (the GEMM probe, module docstring)."""
        q = self.profile.roofline_p
        return (t_compute ** q + t_io ** q) ** (1.0 / q)

    def allreduce_time(self, tokens: int) -> float:
        """TP's all-reduces of one step: two per layer, each a fixed latency plus a ring all-reduce of the step's
        hidden states (2 (N-1)/N of tokens x hidden x 2 bytes per GPU) over the interconnect. 0 at TP=1."""
        n = self.tp
        if n == 1 or tokens <= 0:
            return 0.0
        p = self.profile
        ring_bytes = 2.0 * (n - 1) / n * tokens * self.model.hidden_size * 2.0
        one = p.allreduce_latency_s + ring_bytes / (self.link_gbs * GB * p.link_efficiency)
        return 2 * self.model.num_layers * one

    def step_time(self, chunks: Iterable[tuple[int, int]], sampled: int) -> float:
        return self.step_cost(StepLoad(tuple(chunks), sampled)).duration_s

    # -- summaries

    def describe(self) -> dict:
        """Numbers worth printing at startup and exposing on /version."""
        return {
            "gpu": self.gpu.id, "model": self.model.id, "tp": self.tp,
            "weight_gb": round(self.weight_bytes_total / GB, 3),
            "weight_gb_per_gpu": round(self.weight_bytes_per_gpu / GB, 3),
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "kv_capacity_tokens": self.kv_capacity_tokens,
            "num_kv_blocks": self.num_blocks,
            "max_num_seqs": self.max_num_seqs,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "max_model_len": self.max_model_len,
            "gemm_efficiency": round(self.gemm_efficiency, 3),
            "decode_step_ms_batch1": round(1e3 * self.step_time([(1, 512)], 1), 3),
            **({"interconnect_gbs": self.link_gbs, "interconnect_source": self.link_source,
                "tp_efficiency": self.profile.tp_efficiency} if self.tp > 1 else {}),
        }


def blocks_for(tokens: int, block_size: int) -> int:
    return math.ceil(tokens / block_size) if tokens > 0 else 0
