"""The shipped GPU and model catalogs load through catalog/loader.py and every entry is physically sane."""
import pytest

from catalog import CatalogError, get_gpu, get_model, load_gpus, load_models

REQUIRED_GPUS = ["RTX-5090", "L40S", "A100-80GB", "H100-SXM-80GB", "H100-PCIe-80GB", "H200-141GB"]
REQUIRED_MODELS = ["Qwen/Qwen3-0.6B", "Qwen/Qwen3-8B", "Qwen/Qwen3-30B-A3B", "meta-llama/Llama-3.1-8B-Instruct",
                   "meta-llama/Meta-Llama-3-70B-Instruct", "google/gemma-3-27b-it"]


def test_required_entries_present():
    gpus, models = load_gpus(), load_models()
    assert set(REQUIRED_GPUS) <= set(gpus)
    assert set(REQUIRED_MODELS) <= set(models)


@pytest.mark.parametrize("gpu_id", sorted(load_gpus()))
def test_gpu_entry_sane(gpu_id):
    g = get_gpu(gpu_id)
    assert 16 <= g.memory_gb <= 300
    assert 500 <= g.mem_bandwidth_gbs <= 20_000
    assert 100 <= g.bf16_tflops <= 5_000
    if g.fp8_tflops is not None:
        # Dense FP8 is exactly 2x dense BF16 on every listed part; a sparsity figure would show up as 4x.
        assert g.fp8_tflops == pytest.approx(2 * g.bf16_tflops, rel=0.02)
    assert 150 <= g.tdp_w <= 1500
    assert 0 < g.price_per_hour < 20
    assert g.nvml_names and all(n.strip() for n in g.nvml_names)
    assert g.sources and all(s.startswith("https://") for s in g.sources)


def test_nvml_names_are_unambiguous():
    """Each NVML substring maps to exactly one catalog entry for the real device names we know."""
    real_names = {
        "NVIDIA H100 80GB HBM3": "H100-SXM-80GB", "NVIDIA H100 PCIe": "H100-PCIe-80GB",
        "NVIDIA A100-SXM4-80GB": "A100-80GB", "NVIDIA L40S": "L40S", "NVIDIA H200": "H200-141GB",
        "NVIDIA GeForce RTX 5090": "RTX-5090", "NVIDIA B200": "B200-180GB",
    }
    gpus = load_gpus()
    for name, want in real_names.items():
        hits = [g.id for g in gpus.values() if any(s in name for s in g.nvml_names)]
        assert hits == [want], (name, hits)


@pytest.mark.parametrize("model_id", sorted(load_models()))
def test_model_entry_sane(model_id):
    m = get_model(model_id)
    assert m.num_attention_heads % m.num_kv_heads == 0
    assert m.active_params_b <= m.total_params_b
    assert m.kv_bytes_per_token() > 0
    assert m.weight_bytes() == pytest.approx(m.total_params_b * 2e9)
    assert m.sources
    if m.id in REQUIRED_MODELS:
        assert all(s.startswith("https://huggingface.co/" + m.id) for s in m.sources)
    assert (m.num_experts is None) == (m.experts_per_token is None)
    # Parameter count implied by the architecture (attention + MLP/experts + embeddings) matches the published
    # total within 5 %: catches a wrong layer count, width or vocab.
    emb = m.vocab_size * m.hidden_size * (1 if m.tie_word_embeddings else 2)
    attn = m.hidden_size * m.head_dim * (2 * m.num_attention_heads + 2 * m.num_kv_heads)
    mlp = 3 * m.hidden_size * m.intermediate_size * (m.num_experts or 1)
    implied = m.num_layers * (attn + mlp) + emb
    published = m.total_params_b * 1e9
    if m.id == "google/gemma-3-27b-it":
        published -= 0.4e9  # the SigLIP vision tower is outside this count
    assert implied == pytest.approx(published, rel=0.05), implied / 1e9


def test_qwen3_0_6b_matches_config_json():
    m = get_model("Qwen/Qwen3-0.6B")
    assert (m.num_layers, m.hidden_size, m.num_attention_heads, m.num_kv_heads, m.head_dim) == (28, 1024, 16, 8, 128)
    assert (m.vocab_size, m.intermediate_size, m.tie_word_embeddings) == (151936, 3072, True)
    assert m.kv_bytes_per_token() == 2 * 28 * 8 * 128 * 2  # 114,688 bytes


def test_h100_sxm_dense_not_sparse():
    g = get_gpu("H100-SXM-80GB")
    assert g.bf16_tflops == pytest.approx(989.4, rel=0.01)  # 1,979 is the sparsity figure
    assert g.mem_bandwidth_gbs == 3350


def test_unknown_ids_name_close_matches():
    with pytest.raises(CatalogError) as e:
        get_gpu("H100-SXM")
    assert "H100-SXM-80GB" in str(e.value)
    with pytest.raises(CatalogError) as e:
        get_model("Qwen/Qwen3-0.5B")
    assert "Qwen/Qwen3-0.6B" in str(e.value)


def test_lookup_is_case_insensitive():
    assert get_gpu("h100-sxm-80gb").id == "H100-SXM-80GB"
    assert get_model("qwen/qwen3-8b").id == "Qwen/Qwen3-8B"
