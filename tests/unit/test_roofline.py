"""bench/roofline.py against hand calculations from the catalog's numbers."""
import pytest

from bench.roofline import level_roofline, roofline
from catalog import get_gpu, get_model


def test_batch_one_decode_is_memory_bound_by_hand():
    # Qwen3-0.6B on an H200 (catalog: 4800 GB/s, 989.4 dense BF16 TFLOP/s), one sequence at 640 tokens of context.
    # weights: 0.596e9 params x 2 B = 1.192e9 B; KV per token: 2 x 28 layers x 8 KV heads x 128 x 2 B = 114,688 B;
    # KV read: 640 x 114,688 = 73,400,320 B; step bytes 1,265,400,320 -> 1,265,400,320 / 4.8e12 = 263.625 us.
    # FLOPs: 2 x 0.596e9 + 4 x 28 x 16 x 128 x 640 = 1.192e9 + 146,800,640 = 1,338,800,640 -> 1.353 us at peak.
    r = roofline(get_gpu("H200-141GB"), get_model("Qwen/Qwen3-0.6B"), batch=1, context=640, output_tok_s=470)
    assert r["step_bytes"] == pytest.approx(1_265_400_320)
    assert r["step_flops"] == pytest.approx(1_338_800_640)
    assert r["bound"] == "memory"
    assert r["roofline_tok_s"] == pytest.approx(4.8e12 / 1_265_400_320)          # 3,793.3 tok/s
    assert r["roofline_tok_s"] == pytest.approx(3793.3, abs=0.1)
    assert r["share"] == pytest.approx(470 / 3793.3, rel=1e-4)                   # 12.4%
    assert r["bandwidth_share"] == pytest.approx(r["share"])
    assert r["compute_share"] == pytest.approx(470 * 1_338_800_640 / 989.4e12)


def test_big_batch_share_and_compute_bound():
    gpu, model = get_gpu("H200-141GB"), get_model("Qwen/Qwen3-0.6B")
    # 256 sequences at 384 tokens: bytes 1.192e9 + 256 x 384 x 114,688 = 12,466,289,152 -> 2.597 ms;
    # FLOPs 256 x (1.192e9 + 4 x 28 x 16 x 128 x 384) = 256 x 1,280,080,384 = 327,700,578,304 -> 0.331 ms.
    r = roofline(gpu, model, batch=256, context=384, output_tok_s=12_000)
    assert r["step_bytes"] == pytest.approx(1.192e9 + 256 * 384 * 114_688)
    assert r["roofline_tok_s"] == pytest.approx(256 / (12_466_289_152 / 4.8e12))   # 98,570 tok/s
    assert r["share"] == pytest.approx(12_000 / r["roofline_tok_s"])
    # a huge batch at long context with fp8 weights flips nothing here; a tiny-bandwidth card goes compute-bound
    r2 = roofline(gpu, model, batch=4096, context=0, output_tok_s=None)
    assert r2["bound"] == "compute" and r2["share"] is None
    # two GPUs: twice the roofline
    assert roofline(gpu, model, batch=8, context=100, gpus=2)["roofline_tok_s"] == pytest.approx(
        2 * roofline(gpu, model, batch=8, context=100)["roofline_tok_s"])
    with pytest.raises(ValueError):
        roofline(gpu, model, batch=0, context=1)


def test_level_roofline_uses_littles_law_and_the_steady_figures():
    summary = {"concurrency": 64, "output_tok_s": 9000.0, "req_s": 30.0, "e2e_ms": {"mean": 2000.0},
               "input_tokens_per_req": {"mean": 256.0}, "output_tokens_per_req": {"mean": 256.0},
               "steady": {"window": True, "output_tok_s": 10_000.0, "req_s": 25.0, "e2e_ms": {"mean": 2000.0}}}
    r = level_roofline(summary, "H200-141GB", "Qwen/Qwen3-0.6B")
    assert r["steady"] is True and r["batch"] == pytest.approx(50.0)            # 25 req/s x 2 s in flight
    assert r["context"] == pytest.approx(256 + 128)
    expect = roofline(get_gpu("H200-141GB"), get_model("Qwen/Qwen3-0.6B"), batch=50, context=384,
                      output_tok_s=10_000)
    assert r["share"] == pytest.approx(expect["share"])
    # Little's law above the concurrency is capped by it; no catalog entry -> None
    summary["steady"]["req_s"] = 100.0
    assert level_roofline(summary, "H200-141GB", "Qwen/Qwen3-0.6B")["batch"] == 64
    assert level_roofline(summary, "no-such-gpu", "Qwen/Qwen3-0.6B") is None
    assert level_roofline(summary, None, "Qwen/Qwen3-0.6B") is None
    whole = level_roofline(summary, "H200-141GB", "Qwen/Qwen3-0.6B", steady=False)
    assert whole["steady"] is False and whole["batch"] == pytest.approx(60.0)    # 30 req/s x 2 s


def test_fp8_weights_are_held_to_their_own_bytes():
    """The H200 fp8 sim run of Llama-3.1-8B showed a roofline share of 108% at one stream: the bound counted bf16
    weights. By hand (catalog: 8.03e9 params, 128,256 x 4,096 embedding + untied LM head = 1.0507e9 params that fp8
    leaves in bf16): bytes = (8.03e9 - 1.0507e9) x 1 + 1.0507e9 x 2 = 9.0807e9, against 16.06e9 in bf16."""
    model = get_model("meta-llama/Llama-3.1-8B-Instruct")
    summary = {"concurrency": 1, "output_tok_s": 279.0, "req_s": 2.18, "e2e_ms": {"mean": 458.0},
               "input_tokens_per_req": {"mean": 512.0}, "output_tokens_per_req": {"mean": 128.0}}
    bf16 = level_roofline(summary, "H200-141GB", model.id)
    fp8 = level_roofline(summary, "H200-141GB", model.id, quantization="fp8")
    emb = 128_256 * 4_096 * 2
    kv = 1.0 * 576 * model.kv_bytes_per_token(2.0)          # batch ~1 (2.18 req/s x 0.458 s) at 576 tokens
    assert fp8["step_bytes"] == pytest.approx((model.total_params_b * 1e9 - emb) + emb * 2 + kv * fp8["batch"],
                                              rel=1e-6)
    assert bf16["step_bytes"] == pytest.approx(model.total_params_b * 1e9 * 2 + kv * bf16["batch"], rel=1e-6)
    assert fp8["share"] == pytest.approx(0.533, abs=0.001) and bf16["share"] == pytest.approx(0.939, abs=0.001)
    assert fp8["peak_tflops"] == get_gpu("H200-141GB").fp8_tflops
    # an fp8 KV cache halves the KV part; a weight-only scheme keeps the bf16 peak; unknown -> bf16 bytes
    kv8 = level_roofline(summary, "H200-141GB", model.id, quantization="fp8", kv_cache_dtype="fp8")
    assert kv8["step_bytes"] == pytest.approx(fp8["step_bytes"] - kv * fp8["batch"] / 2, rel=1e-6)
    assert level_roofline(summary, "H200-141GB", model.id, quantization="awq")["peak_tflops"] == \
        get_gpu("H200-141GB").bf16_tflops
    assert level_roofline(summary, "H200-141GB", model.id, quantization="nope")["step_bytes"] == \
        pytest.approx(bf16["step_bytes"])
