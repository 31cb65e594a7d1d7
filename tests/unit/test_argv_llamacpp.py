"""llama.cpp (llama-cpp-python's server) argv building, the dummy GGUF writer, and llama-cpp-python's own parser on
our argv when an install can be found."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import platformdirs
import pytest

from catalog.loader import get_model
from catalog.tokenizer import tokenizer_json
from engines import gguf_dummy, llamacpp, registry
from engines.spec import EngineSpec


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def spec(**kw) -> EngineSpec:
    base = dict(kind="llamacpp", model="melt/tiny-qwen3", served_model_name="tiny", dummy_weights=True,
                max_model_len=2048, kv_cache_dtype="q8_0", extra_args=["--n_threads", "2"])
    base.update(kw)
    return EngineSpec(**base)


def test_every_spec_field_reaches_argv(tmp_path):
    plan = llamacpp.build_plan(spec(), "127.0.0.1", 8123, tmp_path)
    a = plan.argv
    assert a[:3] == ["python3", "-m", "llama_cpp.server"]
    gguf_file = Path(flag(a, "--model"))
    assert gguf_file == tmp_path / "dummy-model" / "melt--tiny-qwen3-Q8_0.gguf" and gguf_file.is_file()
    # the tokenizer Melt's prompts are made with sits beside it: the same BPE the GGUF carries
    assert (tmp_path / "dummy-model" / "tokenizer.json").is_file()
    assert flag(a, "--model_alias") == "tiny"
    assert flag(a, "--host") == "127.0.0.1" and flag(a, "--port") == "8123"
    assert flag(a, "--interrupt_requests") == "False"  # else each new request ends the stream in flight
    assert flag(a, "--n_gpu_layers") == "0" and flag(a, "--n_ctx") == "2048"
    assert flag(a, "--type_k") == "8" and flag(a, "--type_v") == "8"  # GGML_TYPE_Q8_0
    assert a[-2:] == ["--n_threads", "2"]
    assert plan.health_path == "/v1/models" and plan.served_model_name == "tiny"
    assert plan.stream_usage == "finish-length" and plan.metrics is False and not plan.simulated
    assert "CUDA_VISIBLE_DEVICES" not in plan.env


def test_gpus_offload_every_layer_and_f16(tmp_path):
    plan = llamacpp.build_plan(spec(gpus=[1], quantization="f16", kv_cache_dtype=None), "127.0.0.1", 1, tmp_path)
    assert flag(plan.argv, "--n_gpu_layers") == "-1" and plan.env["CUDA_VISIBLE_DEVICES"] == "1"
    assert flag(plan.argv, "--model").endswith("melt--tiny-qwen3-F16.gguf") and "--type_k" not in plan.argv


def test_a_real_gguf_path_is_served_as_is(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    plan = llamacpp.build_plan(spec(model=str(f), dummy_weights=False), "127.0.0.1", 1, tmp_path / "w")
    assert flag(plan.argv, "--model") == str(f) and not (tmp_path / "w").exists()


@pytest.mark.parametrize("kw,match", [
    (dict(tp=2), "no tp setting"), (dict(dp=2), "no dp setting"), (dict(mem_fraction=0.9), "no mem_fraction"),
    (dict(max_seqs=8), "one request at a time"), (dict(dtype="bfloat16"), "no dtype"),
    (dict(kv_cache_dtype="fp8"), "no KV-cache type 'fp8'"),
    (dict(model="Qwen/Qwen3-0.6B", dummy_weights=False), "not one .*--dummy-weights"),
])
def test_refused_settings(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        llamacpp.build_plan(spec(**kw), "127.0.0.1", 1, tmp_path)


def test_registry_dispatches_and_finds_the_melt_venv(tmp_path, monkeypatch):
    monkeypatch.delenv("MELT_LLAMACPP_CMD", raising=False)
    assert "llamacpp" in registry.REAL_ENGINES
    py = registry.data_dir() / "engines" / "llama-cpp" / "venv" / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text("#!/bin/sh\n")
    cmd, source = registry.find_command("llamacpp")
    assert cmd == [str(py), "-m", "llama_cpp.server"] and source == "melt-venv"
    plan = registry.build_plan(spec(), "127.0.0.1", 5, tmp_path)
    assert plan.argv[:3] == cmd
    monkeypatch.setenv("MELT_LLAMACPP_CMD", "/opt/l/bin/python -m llama_cpp.server")
    assert registry.find_command("llamacpp") == (["/opt/l/bin/python", "-m", "llama_cpp.server"], "env")


# ---------------------------------------------------------------------------------------------- the GGUF writer

def test_dummy_gguf_has_the_catalog_shape_and_melts_bpe(tmp_path):
    import gguf

    model = get_model("melt/tiny-qwen3")
    path = gguf_dummy.write_gguf(model, tmp_path / "t.gguf")
    r = gguf.GGUFReader(str(path))
    f = {k: v for k, v in r.fields.items()}

    def val(key):
        return f[key].contents()

    assert val("general.architecture") == "qwen3"
    assert val("qwen3.block_count") == model.num_layers and val("qwen3.embedding_length") == model.hidden_size
    assert val("qwen3.feed_forward_length") == model.intermediate_size
    assert val("qwen3.attention.head_count") == 4 and val("qwen3.attention.head_count_kv") == 2
    assert val("qwen3.attention.key_length") == 64
    assert val("tokenizer.ggml.model") == "gpt2" and val("tokenizer.ggml.pre") == "gpt-2"
    assert val("tokenizer.ggml.add_bos_token") is False
    tj = tokenizer_json(model.vocab_size)
    tokens = val("tokenizer.ggml.tokens")
    assert len(tokens) == model.vocab_size
    assert all(tokens[i] == t for t, i in list(tj["model"]["vocab"].items())[:2000])
    assert val("tokenizer.ggml.merges")[:3] == [" ".join(m) if not isinstance(m, str) else m
                                                for m in tj["model"]["merges"][:3]]
    tensors = {t.name: t for t in r.tensors}
    # 1 embedding + 11 per qwen3 layer + output norm; tied embeddings: no output.weight
    assert len(tensors) == 1 + 11 * model.num_layers + 1 and "output.weight" not in tensors
    emb = tensors["token_embd.weight"]
    assert emb.tensor_type == gguf.GGMLQuantizationType.Q8_0 and list(emb.shape) == [256, 32000]
    assert tensors["blk.1.attn_k.weight"].shape.tolist() == [256, 128]
    assert tensors["blk.0.attn_q_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    # random, not zeros: the dequantized weights have the intended spread
    w = gguf.dequantize(tensors["blk.0.ffn_up.weight"].data, gguf.GGMLQuantizationType.Q8_0)
    assert w.shape == (512, 256) and 0.01 < float(np.std(w)) < 0.03
    assert path.stat().st_size >= gguf_dummy.gguf_bytes_estimate(model)


def test_llama_shape_f16_and_refusals(tmp_path):
    import gguf

    base = get_model("melt/tiny-qwen3")
    llama = base.model_copy(update={"model_type": "llama", "architecture": "LlamaForCausalLM",
                                    "tie_word_embeddings": False})
    r = gguf.GGUFReader(str(gguf_dummy.write_gguf(llama, tmp_path / "l.gguf", quant="F16")))
    names = {t.name: t for t in r.tensors}
    assert "output.weight" in names and "blk.0.attn_q_norm.weight" not in names
    assert names["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    with pytest.raises(ValueError, match="model_type 'gemma3'"):
        gguf_dummy.write_gguf(get_model("google/gemma-3-27b-it"), tmp_path / "g.gguf")
    with pytest.raises(ValueError, match="mixture of experts"):
        gguf_dummy.write_gguf(base.model_copy(update={"num_experts": 8}), tmp_path / "m.gguf")
    assert not list(tmp_path.glob(".*tmp"))  # a refused write leaves no temp file


def test_size_estimate_of_big_catalog_models():
    # Q8_0: 34 bytes per 32 weights. Llama-3.1-8B: ~8.0e9 params -> ~8.5 GB; Qwen3-0.6B (tied) ~0.64 GB
    est = gguf_dummy.gguf_bytes_estimate(get_model("meta-llama/Llama-3.1-8B-Instruct"))
    assert 8.0e9 < est < 8.8e9
    assert 0.5e9 < gguf_dummy.gguf_bytes_estimate(get_model("Qwen/Qwen3-0.6B")) < 0.8e9


# ---------------------------------------------------------------------------- llama-cpp-python's own parser

PARSE = r"""
import argparse, json, sys
from llama_cpp.server.settings import Settings, ServerSettings, ModelSettings
from llama_cpp.server.cli import add_args_from_model, parse_model_from_args
import importlib.metadata as m
p = argparse.ArgumentParser()
add_args_from_model(p, Settings)
a = p.parse_args(sys.argv[1:])
s, ms = parse_model_from_args(ServerSettings, a), parse_model_from_args(ModelSettings, a)
print("MELT-PARSED " + json.dumps({"version": m.version("llama_cpp_python"), **s.model_dump(), **ms.model_dump()},
                                  default=str))
"""


def llamacpp_python() -> str | None:
    """MELT_LLAMACPP_PY, else the real per-user Melt venv (tests run with a throw-away MELT_HOME)."""
    for c in (os.environ.get("MELT_LLAMACPP_PY"),
              str(Path(platformdirs.user_data_dir("melt", appauthor=False)) / "engines/llama-cpp/venv/bin/python")):
        if c and Path(c).exists() and subprocess.run([c, "-c", "import llama_cpp.server.settings"],
                                                     capture_output=True, timeout=120).returncode == 0:
            return c
    return None


def test_real_llama_cpp_parser_accepts_our_argv(tmp_path):
    py = llamacpp_python()
    if not py:
        pytest.skip("llama-cpp-python is not installed (python -m bench engines install llama-cpp)")
    plan = llamacpp.build_plan(spec(), "127.0.0.1", 8123, tmp_path)
    out = subprocess.run([py, "-c", PARSE, *plan.argv[3:]], capture_output=True, text=True, timeout=120)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("MELT-PARSED ")), None)
    assert line, f"llama-cpp-python rejected our argv {plan.argv[3:]}:\n{out.stderr[-3000:]}"
    got = json.loads(line.split(" ", 1)[1])
    assert got["version"] == "0.3.36"
    assert got["model"] == flag(plan.argv, "--model") and got["model_alias"] == "tiny"
    assert got["host"] == "127.0.0.1" and got["port"] == 8123 and got["interrupt_requests"] is False
    assert got["n_gpu_layers"] == 0 and got["n_ctx"] == 2048 and got["type_k"] == 8 and got["type_v"] == 8
    assert got["n_threads"] == 2
