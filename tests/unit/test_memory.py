"""bench.memory: weights + KV cache against GPU memory, by hand on a Llama-3-8B-shaped model."""
import pytest

from bench.memory import GB, RUNTIME_OVERHEAD_GB, estimate_fit, kv_bytes_per_elem, weight_bytes_per_param
from catalog.models import GPUSpec, ModelSpec

LLAMA8B = ModelSpec(id="test/llama-8b", architecture="LlamaForCausalLM", model_type="llama", num_layers=32,
                    hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_kv_heads=8, head_dim=128,
                    vocab_size=128256, max_position_embeddings=8192, total_params_b=8.0, active_params_b=8.0)
LLAMA70B = LLAMA8B.model_copy(update={"id": "test/llama-70b", "num_layers": 80, "hidden_size": 8192,
                                      "intermediate_size": 28672, "num_attention_heads": 64, "total_params_b": 70.0})
H100 = GPUSpec(id="H100", name="H100", memory_gb=80, mem_bandwidth_gbs=3350, bf16_tflops=989, tdp_w=700,
               price_per_hour=3.0)


def test_bytes_per_param_and_kv_elem():
    assert weight_bytes_per_param(LLAMA8B) == 2.0                    # model dtype bfloat16
    assert weight_bytes_per_param(LLAMA8B, dtype="float32") == 4.0
    assert weight_bytes_per_param(LLAMA8B, quantization="fp8") == 1.0
    assert weight_bytes_per_param(LLAMA8B, quantization="AWQ") == 0.5625  # 4 bits + group scales
    assert kv_bytes_per_elem(LLAMA8B) == 2.0
    assert kv_bytes_per_elem(LLAMA8B, "fp8") == 1.0
    with pytest.raises(ValueError):
        weight_bytes_per_param(LLAMA8B, quantization="magic")
    with pytest.raises(ValueError):
        kv_bytes_per_elem(LLAMA8B, "int3")


def test_single_gpu_breakdown_by_hand():
    fit = estimate_fit(LLAMA8B, H100, mem_fraction=0.9)
    assert fit.weights_gb == pytest.approx(16.0)                     # 8e9 params x 2 bytes
    assert fit.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2            # K+V x layers x kv heads x dim x bf16
    assert fit.overhead_gb > RUNTIME_OVERHEAD_GB
    assert fit.kv_gb == pytest.approx(72.0 - 16.0 - fit.overhead_gb)
    assert fit.kv_tokens == int(fit.kv_gb * GB // fit.kv_bytes_per_token)
    assert fit.unused_gb == pytest.approx(8.0)
    assert fit.fits and fit.warnings == []
    assert sum(gb for _, gb in fit.segments()) == pytest.approx(80.0)
    assert fit.max_concurrent_full_len == fit.kv_tokens // 8192


def test_tp_splits_weights_and_kv_heads():
    one = estimate_fit(LLAMA8B, H100)
    two = estimate_fit(LLAMA8B, H100, n_gpus=2, tp=2)
    assert two.weights_gb == pytest.approx(one.weights_gb / 2)
    assert two.kv_bytes_per_token == one.kv_bytes_per_token / 2
    # More GPUs than KV heads: each GPU keeps one (replicated) head, not a fraction of one.
    sixteen = estimate_fit(LLAMA8B, H100, n_gpus=16, tp=16)
    assert sixteen.kv_bytes_per_token == 2 * 32 * 1 * 128 * 2


def test_fp8_kv_doubles_capacity():
    base = estimate_fit(LLAMA8B, H100)
    fp8 = estimate_fit(LLAMA8B, H100, kv_cache_dtype="fp8")
    assert fp8.kv_bytes_per_token == base.kv_bytes_per_token / 2
    assert fp8.kv_tokens == pytest.approx(2 * base.kv_tokens, abs=2)


def test_does_not_fit_and_warnings():
    fit = estimate_fit(LLAMA70B, 24.0)                               # a 24 GB card, 140 GB of weights
    assert not fit.fits and fit.kv_tokens == 0
    assert any("exceed" in w for w in fit.warnings)
    assert all(gb >= 0 for _, gb in fit.segments())
    odd = estimate_fit(LLAMA8B, H100, n_gpus=2, tp=3)
    assert any("do not divide" in w for w in odd.warnings)
    assert any("selected" in w for w in odd.warnings)


def test_workload_kv_need():
    # 512 users x 1,024 tokens, DP 2: 256 per replica (under the 1,024 max_seqs of an 80 GB GPU) -> 262,144 tokens.
    fit = estimate_fit(LLAMA8B, H100, n_gpus=2, dp=2, max_concurrency=512, tokens_per_request=1024)
    assert fit.need_kv_tokens == 256 * 1024
    assert fit.workload_fits is True                                  # ~410k tokens of KV on an 80 GB H100
    small = estimate_fit(LLAMA8B, H100, mem_fraction=0.3, max_concurrency=512, tokens_per_request=1024,
                         max_model_len=4096)
    assert small.workload_fits is False
    assert any("queue" in w for w in small.warnings)
    assert estimate_fit(LLAMA8B, H100).workload_fits is None


def test_max_seqs_default_follows_the_gpu_and_caps_a_level():
    # vLLM (and the simulator) run 1,024 sequences at once on >= 70 GB GPUs, 256 below
    assert estimate_fit(LLAMA8B, H100).max_seqs == 1024 and estimate_fit(LLAMA8B, 48.0).max_seqs == 256
    assert estimate_fit(LLAMA8B, H100, max_seqs=64).max_seqs == 64
    # 100,000 users: only 1,024 are resident; the level is mostly queueing, and the form says so
    big = estimate_fit(LLAMA8B, H100, max_concurrency=100_000, tokens_per_request=640)
    assert big.need_kv_tokens == 1024 * 640
    assert any("100,000 users" in w and "1,024 sequences" in w and "default" in w for w in big.warnings)
    assert not any("sequences the engine runs" in w
                   for w in estimate_fit(LLAMA8B, H100, max_concurrency=1024, tokens_per_request=640).warnings)
    # the sampler's fp32 logits of 1,024 sequences leave less KV than 256 would
    assert estimate_fit(LLAMA8B, H100).kv_tokens < estimate_fit(LLAMA8B, H100, max_seqs=256).kv_tokens


def test_bad_inputs():
    with pytest.raises(ValueError):
        estimate_fit(LLAMA8B, H100, mem_fraction=1.5)
    with pytest.raises(ValueError):
        estimate_fit(LLAMA8B, 0.0)
