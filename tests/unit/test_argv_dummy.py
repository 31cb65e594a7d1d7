"""Dummy model directories: a config engines accept and a tokenizer whose vocabulary matches the config."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from catalog.loader import get_model, load_models
from engines.dummy import EOS_ID, model_path_for, write_model_dir
from engines.spec import EngineSpec


def test_tiny_model_dir(tmp_path):
    m = get_model("melt/tiny-qwen3")
    d = write_model_dir(m, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen3ForCausalLM"] and cfg["model_type"] == "qwen3"
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"],
            cfg["head_dim"], cfg["intermediate_size"]) == (2, 256, 4, 2, 64, 512)
    assert cfg["vocab_size"] == 32000 and cfg["max_position_embeddings"] == 2048
    assert cfg["torch_dtype"] == "bfloat16" and cfg["rope_theta"] == 1_000_000 and cfg["eos_token_id"] == EOS_ID
    tok = json.loads((d / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    assert len(vocab) == 32000 and sorted(vocab.values()) == list(range(32000))  # every id, exactly once
    assert tok["model"]["type"] == "BPE" and tok["pre_tokenizer"]["type"] == "ByteLevel"  # real BPE work
    assert [a["content"] for a in tok["added_tokens"]][:3] == ["<unk>", "<s>", "</s>"]
    tcfg = json.loads((d / "tokenizer_config.json").read_text())
    assert tcfg["eos_token"] == "</s>" and "chat_template" in tcfg
    assert json.loads((d / "generation_config.json").read_text())["eos_token_id"] == EOS_ID


@pytest.mark.parametrize("model_id", sorted(load_models()))
def test_every_catalog_model_writes(tmp_path, model_id):
    m = get_model(model_id)
    d = write_model_dir(m, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["vocab_size"] == m.vocab_size and cfg["num_hidden_layers"] == m.num_layers
    assert len(json.loads((d / "tokenizer.json").read_text())["model"]["vocab"]) == m.vocab_size
    if m.num_experts:
        assert cfg["num_experts"] == m.num_experts and cfg["moe_intermediate_size"] == m.intermediate_size


def test_model_path_for(tmp_path):
    real = EngineSpec(kind="vllm", model="Qwen/Qwen3-8B")
    assert model_path_for(real, tmp_path) == "Qwen/Qwen3-8B"
    local = write_model_dir(get_model("melt/tiny-qwen3"), tmp_path / "mine")
    assert model_path_for(EngineSpec(kind="vllm", model=str(local), dummy_weights=True), tmp_path / "w") == str(local)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        model_path_for(EngineSpec(kind="vllm", model=str(empty), dummy_weights=True), tmp_path)


@pytest.mark.vllm
def test_transformers_loads_it(tmp_path):
    """The hand-written files must load in real transformers/tokenizers (the vLLM venv has both; Melt's doesn't)."""
    py = Path(os.environ.get("MELT_VLLM_CPU_PY", "/root/.cache/melt-vllm-cpu/bin/python"))
    if not py.exists():
        pytest.skip("no vLLM venv (it provides transformers)")
    d = write_model_dir(get_model("melt/tiny-qwen3"), tmp_path / "m")
    code = ("import sys\nfrom transformers import AutoConfig, AutoTokenizer\n"
            "c = AutoConfig.from_pretrained(sys.argv[1]); t = AutoTokenizer.from_pretrained(sys.argv[1])\n"
            "ids = t('def main(): return 42', add_special_tokens=False).input_ids\n"
            "print(type(c).__name__, c.vocab_size, len(t), ids, repr(t.decode(ids + [2], skip_special_tokens=True)))\n")
    out = subprocess.run([str(py), "-c", code, str(d)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    from tokenizers import Tokenizer

    ours = Tokenizer.from_file(str(d / "tokenizer.json")).encode("def main(): return 42", add_special_tokens=False).ids
    assert out.stdout.split("\n")[0] == f"Qwen3Config 32000 32000 {ours} 'def main(): return 42'"
