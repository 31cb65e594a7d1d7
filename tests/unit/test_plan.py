"""bench.plan against hand calculations (GB = 10^9 bytes; the H200 and H100 at the MiB NVML reports).

Every expected figure is written out below from the catalog's numbers (assets/models.yaml) and bench.memory's rules:
weights = params x bytes/param / TP; runtime = 1.0 GB + one 8,192-token step's activations
(8192 x (4 hidden + 2 intermediate / TP) x 2 bytes) + the sampler's fp32 logits (max_seqs x vocab x 4 / TP);
KV bytes/token per GPU = 2 x layers x ceil(kv_heads / TP) x head_dim x KV bytes.
"""
import pytest

from bench.plan import PLANNABLE, plan
from catalog import get_gpu, load_models
from catalog.recipes import load_recipe, parse_recipe

H200_GB = 143_771 * 2**20 / 1e9      # 150.755 GB: what nvidia-smi reports on an H200
H100_GB = 81_559 * 2**20 / 1e9       # 85.522 GB
MODELS = load_models()
QWEN06, LLAMA70 = "Qwen/Qwen3-0.6B", "meta-llama/Meta-Llama-3-70B-Instruct"


def _recipe(*instances, services=()):
    return parse_recipe({"name": "t", "instances": list(instances), "services": list(services)})


def test_qwen3_06b_alone_on_h200_at_085():
    p = plan(_recipe({"name": "q", "model": QWEN06, "memory": 0.85, "max_model_len": 4096}),
             get_gpu("H200-141GB"), MODELS)
    q = p.instances[0]
    assert p.total_gb == pytest.approx(150.754820096)
    weights = 0.596 * 2                                               # 1.192 GB, bf16
    runtime = 1.0 + (8192 * (4 * 1024 + 2 * 3072) * 2 + 1024 * 151936 * 4) / 1e9   # 1.790 GB
    kv_gb = 0.85 * H200_GB - weights - runtime                        # 125.160 GB
    per_token = 2 * 28 * 8 * 128 * 2                                  # 114,688 B
    assert q.fit.weights_gb == pytest.approx(weights)
    assert q.fit.overhead_gb == pytest.approx(runtime)
    assert q.kv_tokens == int(kv_gb * 1e9 // per_token) == 1_091_304
    assert q.max_concurrent == 1_091_304 // 4096 == 266               # under vLLM's 1,024 max_num_seqs
    assert q.engine_setting() == ("--gpu-memory-utilization", 0.85)
    assert p.fits and p.suggestions == []
    g = p.gpus[0]
    assert sum(s.gb for s in g.segments) == pytest.approx(H200_GB)    # weights + runtime + KV + free = the card
    assert [s.gb for s in g.segments if s.part == "free"] == [pytest.approx(0.15 * H200_GB)]


@pytest.mark.parametrize("tp, weights, inter, logits_div, kv_heads, tokens", [
    # TP=4: 141.2 GB of weights over 4 GPUs; 8 KV heads -> 2 per GPU
    (4, 70.6 * 2 / 4, 28672 / 4, 4, 2, 1_202_102),
    # TP=8: 1 KV head per GPU, so half the bytes per token and twice the tokens per GB
    (8, 70.6 * 2 / 8, 28672 / 8, 8, 1, 2_839_583),
])
def test_llama3_70b_tensor_parallel_on_h200(tp, weights, inter, logits_div, kv_heads, tokens):
    r = _recipe({"name": "l", "model": LLAMA70, "tp": tp, "max_model_len": 8192})
    p = plan(r, get_gpu("H200-141GB"), MODELS, count=tp)
    inst = p.instances[0]
    runtime = 1.0 + (8192 * (4 * 8192 + 2 * inter) * 2 + 1024 * 128256 * 4 / logits_div) / 1e9
    kv_gb = PLANNABLE * H200_GB - weights - runtime                   # alone: vLLM's default 0.9
    per_token = 2 * 80 * kv_heads * 128 * 2
    assert inst.fraction == pytest.approx(0.9)
    assert inst.fit.weights_gb == pytest.approx(weights) and inst.fit.overhead_gb == pytest.approx(runtime)
    assert inst.kv_tokens == int(kv_gb * 1e9 // per_token) == tokens
    assert inst.max_concurrent == tokens // 8192
    assert p.fits and len(p.gpus) == tp and all(g.fits for g in p.gpus)


def test_llama3_70b_bf16_on_one_h200_does_not_fit_and_says_what_to_do():
    p = plan(_recipe({"name": "l", "model": LLAMA70, "max_model_len": 8192}), get_gpu("H200-141GB"), MODELS,
             count=2)
    assert not p.fits
    assert p.reasons[0].startswith("GPU 0: needs ") and "GB short" in p.reasons[0]
    assert any(r.startswith("l: weights 141.2 GB") for r in p.reasons)
    text = "\n".join(p.suggestions)
    # fp8 quantizes the linear layers; embedding + untied LM head (2 x 128,256 x 8,192 = 2.10 B) stay bf16:
    # 141.2 - ((70.6 - 2.10) x 1 + 2.10 x 2) = 141.2 - 72.7 = 68.5 GB saved
    assert "quantize l to fp8" in text and "-68.5 GB of weights (enough)" in text
    assert "run l at TP=2 over 2 GPUs" in text
    # applying the fp8 suggestion makes it fit
    fp8 = plan(_recipe({"name": "l", "model": LLAMA70, "max_model_len": 8192, "quantization": "fp8"}),
               get_gpu("H200-141GB"), MODELS)
    assert fp8.fits


# The dwani.ai mix by hand. Services 4 + 4.5 + 5 + 9 + 1.4 + 2.5 = 26.4 GB.
SERVICES = 26.4
GEMMA_W = 27.4 * 0.5625                                     # Q4_0: 4.5 bits per weight = 15.41 GB
QWEN_W = 30.5 * 1.0625                                      # Q8_0: 8.5 bits per weight = 32.41 GB
# Gemma 3: 10 full + 52 sliding layers; vLLM groups them by 10, padding the sliding ones to 60: 70 layers of KV
GEMMA_KV_TOKEN, QWEN_KV_TOKEN = 2 * 70 * 16 * 128 * 2, 2 * 48 * 4 * 128 * 2   # 573,440 B and 98,304 B


def _runtime(seqs):
    gemma = 1.0 + (8192 * (4 * 5376 + 2 * 21504) * 2 + seqs * 262208 * 4) / 1e9
    # MoE: per routed copy (8 per token) the gate-up output (2 x 768) and the down output (2,048); GGUF, so no
    # online-quantization copy
    qwen = 1.0 + (8192 * (4 * 2048 + 8 * (2 * 768 + 2048)) * 2 + seqs * 151936 * 4) / 1e9
    return gemma, qwen


def _need(seqs):
    """Per instance: weights + runtime + one 8,192-token sequence of KV."""
    g_rt, q_rt = _runtime(seqs)
    return GEMMA_W + g_rt + 8192 * GEMMA_KV_TOKEN / 1e9, QWEN_W + q_rt + 8192 * QWEN_KV_TOKEN / 1e9


def _dwani(gpu, memory_gb=None):
    return plan(load_recipe("dwani"), get_gpu(gpu), MODELS, memory_gb=memory_gb)


@pytest.mark.parametrize("gpu, memory_gb, total, gemma_tokens, qwen_tokens", [
    ("H200-141GB", None, H200_GB, 52_312, 265_558),
    ("H200-141GB", 96, 96.0, 9_343, 14_911),             # the source document's "only 96 GB" scenario
])
def test_dwani_mix_fits_on_h200_and_96gb(gpu, memory_gb, total, gemma_tokens, qwen_tokens):
    p = _dwani(gpu, memory_gb)
    gemma, qwen = p.instances
    g_need, q_need = _need(1024)                           # 23.24 GB and 35.44 GB
    spare = (PLANNABLE * total - SERVICES - g_need - q_need) / 2   # the rest, split evenly
    g_rt, q_rt = _runtime(1024)
    g_kv = g_need + spare - GEMMA_W - g_rt
    q_kv = q_need + spare - QWEN_W - q_rt
    assert gemma.fraction == pytest.approx((g_need + spare) / total)
    assert gemma.kv_tokens == int(g_kv * 1e9 // GEMMA_KV_TOKEN) == gemma_tokens
    assert qwen.kv_tokens == int(q_kv * 1e9 // QWEN_KV_TOKEN) == qwen_tokens
    assert p.fits, p.reasons
    used = p.gpus[0].used_gb
    assert used == pytest.approx(PLANNABLE * total)        # the planner hands out 90% and keeps 10% back
    # vLLM started second sees the first one's budget gone: the sum of the fractions + services stays in the card
    assert gemma.fraction + qwen.fraction + SERVICES / total == pytest.approx(PLANNABLE)
    assert qwen.free_at_start_gb == pytest.approx(total - SERVICES - gemma.fraction * total)


def test_dwani_mix_on_h100_is_short_and_offloading_fixes_it():
    p = _dwani("H100-SXM-80GB")
    g_need, q_need = _need(1024)
    short = SERVICES + g_need + q_need - PLANNABLE * H100_GB           # 85.08 - 76.97 = 8.11 GB
    assert short == pytest.approx(8.110, abs=1e-3)
    assert not p.fits and not p.gpus[0].fits
    text = "\n".join(p.suggestions)
    assert f"{short:.1f} GB short" in text and f"{short:.1f} GB short" in p.reasons[0]
    assert "offload the small services to CPU (indic-en, en-indic, indic-indic, tts, asr): -17.4 GB (enough)" in text
    assert "drop or move indictrans3: frees 9.0 GB (enough)" in text
    # no quantization suggestion: both LLMs are already GGUF-quantized
    assert "quantize" not in text


def test_dwani_mix_on_rtx5090_does_not_fit():
    p = _dwani("RTX-5090")
    assert p.total_gb == 32.0 and p.memory_source == "catalog nominal GB"
    g_need, q_need = _need(256)                            # vLLM runs 256 sequences by default below 70 GB
    short = SERVICES + g_need + q_need - PLANNABLE * 32.0
    assert short == pytest.approx(55.01, abs=0.01)
    assert not p.fits
    assert any("qwen3: weights 32.4 GB" in r for r in p.reasons)   # the Q8 MoE alone outgrows the card
    assert p.reasons[0] == f"GPU 0: needs {short + 28.8:,.1f} GB (weights + runtime + one max-model-len sequence per " \
        f"LLM, plus 26.4 GB of services), 90% of 32.0 GB is 28.8 GB: {short:.1f} GB short"
    assert "not enough alone" in p.suggestions[1]


def test_engine_settings_follow_the_start_order():
    r = _recipe({"name": "a", "engine": "vllm", "model": QWEN06, "memory": 0.3, "max_model_len": 4096},
                {"name": "b", "engine": "sglang", "model": QWEN06, "memory": 0.3, "max_model_len": 4096},
                {"name": "c", "engine": "trtllm", "model": QWEN06, "memory": 0.3, "max_model_len": 4096},
                services=[{"name": "s", "kind": "asr", "model": "x", "vram_gb": 10}])
    p = plan(r, get_gpu("H200-141GB"), MODELS)
    a, b, c = p.instances
    assert a.engine_setting() == ("--gpu-memory-utilization", 0.3)
    # SGLang: (weights + KV) / memory free at its start (services and instance a already loaded)
    free_b = H200_GB - 10 - 0.3 * H200_GB
    assert b.free_at_start_gb == pytest.approx(free_b)
    assert b.engine_setting()[1] == pytest.approx((0.3 * H200_GB - b.fit.overhead_gb) / free_b)
    # TensorRT-LLM: KV / memory free after its weights and runtime
    free_c = H200_GB - 10 - 0.6 * H200_GB
    after = free_c - c.fit.weights_gb - c.fit.overhead_gb
    assert c.engine_setting()[1] == pytest.approx(c.fit.kv_gb / after)
    assert p.fits


def test_overcommitted_fractions_and_missing_gpus_are_refused():
    r = _recipe({"name": "a", "model": QWEN06, "memory": 0.6, "max_model_len": 4096},
                {"name": "b", "model": QWEN06, "memory": 0.6, "max_model_len": 4096})
    p = plan(r, get_gpu("H200-141GB"), MODELS)
    assert not p.fits
    assert any("b: asks 90.5 GB per GPU, 60.3 GB free at its start" in x for x in p.reasons)
    assert any("GPU 0: 180.9 GB asked of 150.8 GB" in x for x in p.reasons)
    p8 = plan(load_recipe("h200x8-tp8"), get_gpu("H200-141GB"), MODELS, count=4)
    assert "places work on GPU 4, 5, 6, 7 but the box has 4" in p8.reasons[0]


def test_bundled_8xh200_layouts_fit():
    for name in ("h200x8-tp8", "h200x8-two-70b-tp4", "h200x8-eight-8b", "h200x8-hybrid"):
        p = plan(load_recipe(name), get_gpu("H200-141GB"), MODELS, count=8)
        assert p.fits, (name, p.reasons)
        assert len(p.gpus) == 8 and all(g.used_gb <= g.total_gb for g in p.gpus)
    d = plan(load_recipe("h200x8-hybrid"), get_gpu("H200-141GB"), MODELS, count=8).as_dict()
    assert d["instances"][1]["engine_flag"] == "--mem-fraction-static"
    assert [s["part"] for s in d["gpus"][7]["segments"]].count("service") == 5


def test_context_len_sets_concurrency():
    r = _recipe({"name": "q", "model": QWEN06, "memory": 0.85, "max_model_len": 4096})
    p = plan(r, get_gpu("H200-141GB"), MODELS, context_len=1024)
    assert p.instances[0].max_concurrent == 1024            # 1,065 fit, capped by max_num_seqs
    with pytest.raises(ValueError):
        plan(r, get_gpu("H200-141GB"), MODELS, memory_gb=0)


def test_engine_refusals_are_reasons():
    # 16 attention heads do not split over TP=3; 50,000 tokens is past Qwen3-0.6B's 40,960 positions
    r = _recipe({"name": "odd", "model": QWEN06, "tp": 3}, {"name": "long", "model": "qwen/qwen3-0.6b",
                                                            "gpus": [3], "max_model_len": 50_000})
    p = plan(r, get_gpu("H200-141GB"), MODELS, count=4)
    assert not p.fits
    assert "odd: 16 attention heads do not divide by TP 3: the engine will refuse" in p.reasons
    assert "long: max model len 50000 exceeds the model's 40960 positions" in p.reasons
    assert "GPU 0: change odd: 16 attention heads do not divide by TP 3: the engine will refuse" in p.suggestions
    assert not any("raise the memory" in x for x in p.suggestions)
    # a given fraction below the need: raise it (the GPU has room)
    low = plan(_recipe({"name": "q", "model": QWEN06, "memory": 0.01, "max_model_len": 4096}), get_gpu("H200-141GB"),
               MODELS)
    assert not low.fits and low.suggestions == ["GPU 0: raise the memory setting of q (below what it needs: 3.5 GB)"]


def test_mig_layout_uses_the_cards_real_profiles():
    from bench.plan import mig_layout

    h200, h100 = get_gpu("H200-141GB"), get_gpu("H100-SXM-80GB")
    # 30 GB -> 1g.35gb (90% = 31.5 GB), 14 GB -> 1g.18gb (16.2): 3 of 8 memory slices, 2 of 7 compute
    assert mig_layout({"a": 30.0, "b": 14.0}, h200) == ([("a", "1g.35gb"), ("b", "1g.18gb")], "")
    # eight 5 GB tenants -> eight 1g.10gb: 8 memory slices fit, but 8 compute slices and 8 instances do not
    layout, why = mig_layout({f"s{i}": 5.0 for i in range(8)}, h100)
    assert [p for _, p in layout] == ["1g.10gb"] * 8
    assert why == "needs 8 of 8 memory slices and 8 of 7 compute slices; 8 x 1g.10gb (at most 7)"
    assert mig_layout({"x": 200.0}, h200)[1] == "x needs 200.0 GB, more than 90% of the largest slice (7g.141gb)"
    assert mig_layout({"x": 1.0}, get_gpu("RTX-5090"))[1] == "RTX-5090 has no MIG"


def test_dwani_on_h100_mig_is_named_and_does_not_help():
    # gemma 23.24 GB and qwen3 35.17 GB -> 3g.40gb each (36 GB planned; 1g.20gb / 2g.20gb hold 18), the six services
    # (<= 9 GB) -> 1g.10gb each: 4 + 4 + 6 = 14 memory slices of 8, 3 + 3 + 6 = 12 compute slices of 7
    text = "\n".join(_dwani("H100-SXM-80GB").suggestions)
    assert ("MIG slices (H100-SXM-80GB profiles, one per tenant) do not help: needs 14 of 8 memory slices and 12 of 7"
            " compute slices") in text


def test_an_instances_max_batched_tokens_flag_sizes_its_step():
    """--max-num-batched-tokens in an instance's extra_args is the step the planner sizes activations for (vLLM's
    profile run): at 2,048 the MoE's runtime is 6,144 x 73,728 B = 0.453 GB smaller than at the default 8,192."""
    from bench.memory import batched_tokens_from_args

    assert batched_tokens_from_args(["--max-num-batched-tokens", "2048"]) == 2048
    assert batched_tokens_from_args(["--enforce-eager", "--max-num-batched-tokens=16384"]) == 16384
    assert batched_tokens_from_args(["--max-num-seqs", "64"]) is None
    base = {"name": "q", "model": "Qwen/Qwen3-30B-A3B", "quantization": "fp8", "max_model_len": 4096}
    default = plan(_recipe(base), get_gpu("H200-141GB"), MODELS).instances[0]
    small = plan(_recipe({**base, "extra_args": ["--max-num-batched-tokens", "2048"]}), get_gpu("H200-141GB"),
                 MODELS).instances[0]
    assert default.fit.overhead_gb - small.fit.overhead_gb == pytest.approx(6144 * 73_728 / 1e9)
