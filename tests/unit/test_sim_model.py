"""Roofline step time and KV capacity of engines/sim/model.py, checked against hand-computed numbers."""
import pytest

from catalog import CatalogError, get_gpu, get_model
from engines.sim.model import PerfModel, SimKnobs, StepLoad

H100 = get_gpu("H100-SXM-80GB")
QWEN06 = get_model("Qwen/Qwen3-0.6B")


@pytest.fixture(scope="module")
def perf():
    return PerfModel(H100, QWEN06)


def test_kv_capacity_by_hand(perf):
    p = perf.profile
    weights = 0.596e9 * 2
    reserve = p.non_torch_reserve_gb * 1e9 + 8192 * 2 * (4 * 1024 + 2 * 3072) + 1024 * 151936 * 4
    kv_bytes = 80e9 * 0.9 - weights - reserve
    blocks = int(kv_bytes // (114688 * 16))
    assert perf.num_blocks == blocks
    assert perf.kv_capacity_tokens == blocks * 16
    assert 550_000 < perf.kv_capacity_tokens < 650_000  # ~63 GB of KV at 112 KiB/token


def test_scheduler_defaults_follow_vllm(perf):
    assert perf.max_num_seqs == 1024            # >= 70 GB GPU
    assert perf.max_num_batched_tokens == 8192
    assert perf.max_model_len == 40960
    small = PerfModel(get_gpu("L40S"), QWEN06)
    assert small.max_num_seqs == 256


def test_decode_step_batch1_by_hand(perf):
    p = perf.profile
    cost = perf.step_cost(StepLoad(((1, 512),), 1))
    bytes_ = 0.596e9 * 2 + 513 * 114688          # every weight once + the KV of 513 tokens
    bw = 3350e9 * p.bw_efficiency
    assert cost.t_mem_s == pytest.approx(bytes_ / bw)
    assert cost.t_floor_s == pytest.approx(28 * p.layer_floor_s)
    assert cost.bound == "latency"               # a 0.6 B model's GEMMs at one token take longer than their bytes
    gemm = 2 * (0.596e9 - 151936 * 1024) + 2 * 151936 * 1024
    attn = 4 * 28 * 16 * 128 * 513
    t_compute = gemm / (989.4e12 * p.gemm_efficiency_max) + attn / (989.4e12 * p.attn_efficiency)
    act = 2 * 28 * (8 * 1024 + 6 * (16 + 8) * 128 + 3 * 3072)
    t_gpu = (t_compute ** 2 + cost.t_floor_s ** 2) ** 0.5 + 28 * p.nongemm_layer_s + act / bw
    t_cpu = p.step_overhead_s + p.per_seq_overhead_s
    # async scheduling: the longer of the two. On the reference host the engine loop's CPU paces a 0.6 B decode
    # (measured TPOT 2.0 ms at one user), not its GPU
    assert t_cpu > t_gpu and cost.duration_s == pytest.approx(t_cpu)
    assert 1.2e-3 < t_gpu < 1.8e-3
    fast = PerfModel(H100, QWEN06, profile=p.model_copy(update={"step_overhead_s": 0.2e-3}))
    assert fast.step_cost(StepLoad(((1, 512),), 1)).duration_s == pytest.approx(t_gpu)


def test_async_scheduling_overlaps_the_cpu_and_a_piecewise_step_adds_its_launches():
    slow_cpu = {"step_overhead_s": 3e-3, "per_seq_overhead_s": 10e-6, "piecewise_step_s": 5e-3,
                "prefill_chunk_s": 0.0}
    on = PerfModel(H100, QWEN06, profile=PerfModel(H100, QWEN06).profile.model_copy(update=slow_cpu))
    off = PerfModel(H100, QWEN06, profile=on.profile.model_copy(update={"async_scheduling": False}))
    decode = StepLoad(((1, 512),), 1)
    c_on, c_off = on.step_cost(decode), off.step_cost(decode)
    gpu = c_off.duration_s - 3.01e-3                       # without overlap: GPU + CPU
    assert c_on.duration_s == pytest.approx(3.01e-3)       # with it: the CPU, the longer of the two
    assert gpu < 3.01e-3
    # a prefill chunk: piecewise graphs, the launches add to the CPU's share (GPU short here)
    prefill = StepLoad(((512, 0),), 1)
    assert on.step_cost(prefill).duration_s == pytest.approx(3.01e-3 + 5e-3)
    # more decodes than the largest captured graph (512): piecewise too; 512 decodes: one full graph
    assert on.step_cost(StepLoad(((1, 64),) * 513, 513)).t_overhead_s == pytest.approx(3e-3 + 513 * 10e-6 + 5e-3)
    assert on.step_cost(StepLoad(((1, 64),) * 512, 512)).t_overhead_s == pytest.approx(3e-3 + 512 * 10e-6)
    # a prefill chunk's own CPU adds per chunk
    per_chunk = PerfModel(H100, QWEN06, profile=on.profile.model_copy(update={"prefill_chunk_s": 1e-3}))
    assert per_chunk.step_cost(StepLoad(((256, 0), (256, 0), (1, 64)), 3)).t_overhead_s == pytest.approx(
        3e-3 + 3 * 10e-6 + 2 * 1e-3 + 5e-3)
    # a big prefill's GPU work hides the launches
    big = StepLoad(((8192, 0),), 1)
    assert on.step_cost(big).duration_s == pytest.approx(off.step_cost(big).duration_s - 8.01e-3)


def test_big_batches_become_memory_then_compute_bound(perf):
    decode = perf.step_cost(StepLoad(tuple([(1, 2048)] * 256), 256))
    assert decode.bound == "memory"              # 256 x 2 K tokens of KV = 60 GB to read
    prefill = perf.step_cost(StepLoad(tuple([(512, 0)] * 16), 16))
    assert prefill.bound == "compute"
    gemm = 2 * (0.596e9 - 151936 * 1024) * 8192 + 2 * 151936 * 1024 * 16
    attn = 4 * 28 * 16 * 128 * 16 * 512 * (513 / 2)
    t_compute = gemm / (989.4e12 * perf.gemm_efficiency) + attn / (989.4e12 * perf.profile.attn_efficiency)
    assert prefill.t_compute_s == pytest.approx(t_compute)
    # More work never takes less time.
    assert perf.step_time([(1, 512)] * 64, 64) > perf.step_time([(1, 512)] * 8, 8)


def test_the_linear_layers_match_the_h200_gemm_probe():
    """The step model's GEMM part (soft roofline of FLOPs and bytes, the layer floor) against bf16 cuBLAS measured on
    an H200 (scripts/gpu/gemm_probe.py: every layer's four GEMMs in one CUDA graph) at M = 1 .. 8,192 tokens."""
    import json
    from pathlib import Path

    probe = json.loads(Path(__file__).resolve().parents[2].joinpath(
        "docs/data/h200_gemm_probe/gemm_probe.json").read_text())
    h200, errs = get_gpu("H200-141GB"), []
    for name, got in probe["models"].items():
        perf = PerfModel(h200, get_model(name))
        p, layers = perf.profile, perf.model.num_layers
        wb = got["weight_bytes_body"]
        for row in got["rows"]:
            t_c = row["m"] * wb / (perf.peak_flops * p.gemm_efficiency_max)     # 2 FLOPs per param per token
            t_io = max(wb / perf.bandwidth, layers * p.layer_floor_s)
            errs.append(perf.linear_time(t_c, t_io) / row["body_s"] - 1)
    assert len(errs) == 24 and max(map(abs, errs)) < 0.08, [round(e, 3) for e in errs]
    # a hard roofline (the max of the two) misses the ridge by far more: what the soft one is for
    hard = []
    for name, got in probe["models"].items():
        perf = PerfModel(h200, get_model(name))
        wb, layers = got["weight_bytes_body"], perf.model.num_layers
        for row in got["rows"]:
            t_c = row["m"] * wb / (perf.peak_flops * perf.profile.gemm_efficiency_max)
            hard.append(max(t_c, wb / perf.bandwidth, layers * perf.profile.layer_floor_s) / row["body_s"] - 1)
    assert max(map(abs, hard)) > 0.25


def test_a_mid_size_step_uses_the_soft_roofline():
    perf = PerfModel(get_gpu("H200-141GB"), QWEN06)
    cost = perf.step_cost(StepLoad(((512, 0),), 1))
    p = perf.profile
    t_io = max(cost.t_mem_s, cost.t_floor_s)
    gpu = perf.linear_time(cost.t_compute_s, t_io) + perf.nongemm_s + cost.t_elementwise_s
    assert gpu > max(cost.t_compute_s, t_io) * 1.2 + perf.nongemm_s    # near the ridge: well above the hard max
    assert cost.duration_s == pytest.approx(max(gpu, cost.t_overhead_s))
    assert cost.t_overhead_s == pytest.approx(p.step_overhead_s + p.per_seq_overhead_s + p.prefill_chunk_s
                                              + p.piecewise_step_s)
    # with no CPU cost the step is the GPU's: the soft roofline itself, not the hard max of its terms
    no_cpu = PerfModel(get_gpu("H200-141GB"), QWEN06, profile=p.model_copy(update={
        "step_overhead_s": 0.0, "per_seq_overhead_s": 0.0, "prefill_chunk_s": 0.0, "piecewise_step_s": 0.0}))
    assert no_cpu.step_cost(StepLoad(((512, 0),), 1)).duration_s == pytest.approx(gpu)


def test_8b_decode_is_bandwidth_bound_at_batch1():
    perf = PerfModel(H100, get_model("meta-llama/Llama-3.1-8B-Instruct"))
    cost = perf.step_cost(StepLoad(((1, 512),), 1))
    assert cost.bound == "memory"
    # 8.03 B params minus the 0.5 B input-embedding table (gathered, not streamed), bf16.
    streamed = (8.03e9 - 128256 * 4096) * 2
    assert perf.weights_streamed_bytes(1) == pytest.approx(streamed)
    assert 5e-3 < cost.duration_s < 9e-3    # ~16 GB at ~2.7 TB/s achieved


def test_moe_reads_only_routed_experts():
    perf = PerfModel(H100, get_model("Qwen/Qwen3-30B-A3B"))
    one, some, many = (perf.weights_streamed_bytes(n) for n in (1, 16, 4096))
    assert one < some < many
    assert one == pytest.approx((3.3e9 - 151936 * 2048) * 2, rel=0.02)   # ~ active params
    assert many == pytest.approx((30.5e9 - 151936 * 2048) * 2, rel=0.02)  # every expert touched
    p = perf.profile
    assert perf.step_cost(StepLoad(((1, 100),), 1)).t_floor_s == pytest.approx(
        48 * (p.layer_floor_s + p.moe_layer_floor_s))  # MoE layers launch more kernels


def test_fp8_kv_doubles_capacity_and_fp8_weights_need_fp8_gpu():
    base = PerfModel(H100, QWEN06)
    fp8kv = PerfModel(H100, QWEN06, SimKnobs(kv_cache_dtype="fp8"))
    assert fp8kv.kv_bytes_per_token == base.kv_bytes_per_token / 2
    assert fp8kv.num_blocks == pytest.approx(2 * base.num_blocks, abs=1)
    with pytest.raises(CatalogError, match="FP8"):
        PerfModel(get_gpu("A100-80GB"), QWEN06, SimKnobs(weight_dtype="fp8"))
    fp8 = PerfModel(H100, get_model("Qwen/Qwen3-8B"), SimKnobs(weight_dtype="fp8"))
    assert fp8.peak_flops == pytest.approx(1978.9e12)


def test_model_that_does_not_fit_is_refused():
    with pytest.raises(CatalogError, match="does not fit"):
        PerfModel(H100, get_model("meta-llama/Meta-Llama-3-70B-Instruct"))
    assert PerfModel(get_gpu("B200-180GB"), get_model("meta-llama/Meta-Llama-3-70B-Instruct")).num_blocks > 0


def test_max_model_len_must_fit_in_cache():
    llama = get_model("meta-llama/Llama-3.1-8B-Instruct")  # 128 K context does not fit next to 16 GB of weights
    with pytest.raises(CatalogError, match="max-model-len"):
        PerfModel(get_gpu("RTX-5090"), llama)
    assert PerfModel(get_gpu("RTX-5090"), llama, SimKnobs(max_model_len=32768)).max_model_len == 32768


def test_mem_fraction_scales_cache():
    lo = PerfModel(H100, QWEN06, SimKnobs(mem_fraction=0.5))
    hi = PerfModel(H100, QWEN06, SimKnobs(mem_fraction=0.9))
    extra_tokens = 0.4 * 80e9 / QWEN06.kv_bytes_per_token()
    assert hi.kv_capacity_tokens - lo.kv_capacity_tokens == pytest.approx(extra_tokens, abs=32)


def test_weight_only_quantization_streams_fewer_bytes_at_bf16_compute():
    from catalog import get_gpu, get_model
    from engines.sim.model import PerfModel, SimKnobs

    gpu, model = get_gpu("H200-141GB"), get_model("Qwen/Qwen3-30B-A3B")
    bf16 = PerfModel(gpu, model, SimKnobs())
    q8 = PerfModel(gpu, model, SimKnobs(weight_dtype="gguf_q8_0"))
    fp8 = PerfModel(gpu, model, SimKnobs(weight_dtype="fp8"))
    assert q8.weight_bytes_total == pytest.approx(bf16.weight_bytes_total * 1.0625 / 2)
    assert not q8.fp8_compute and q8.peak_flops == bf16.peak_flops          # dequantized: bf16 tensor cores
    assert fp8.fp8_compute and fp8.peak_flops > bf16.peak_flops
    assert q8.kv_capacity_tokens > bf16.kv_capacity_tokens                   # smaller weights leave more KV
    with pytest.raises(ValueError, match="unsupported weight dtype 'q3'"):
        PerfModel(gpu, model, SimKnobs(weight_dtype="q3"))
