"""TensorRT-LLM argv + extra-options YAML; plus trtllm-serve's own click parser when TRT-LLM is importable."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from engines import trtllm
from engines.registry import find_command, python_of
from engines.spec import EngineSpec


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def full_spec(**kw) -> EngineSpec:
    base = dict(kind="trtllm", model="melt/tiny-qwen3", served_model_name="tiny", dummy_weights=True, gpus=[4, 5],
                tp=2, mem_fraction=0.9, max_seqs=256, max_model_len=4096, dtype="bfloat16", kv_cache_dtype="fp8",
                extra_args=["--log_level", "info"])
    base.update(kw)
    return EngineSpec(**base)


def test_argv_and_options_file(tmp_path):
    plan = trtllm.build_plan(full_spec(), "127.0.0.1", 8001, tmp_path)
    a = plan.argv
    assert a[0] == "trtllm-serve" and a[1] == str(tmp_path / "dummy-model")  # MODEL is positional
    assert flag(a, "--host") == "127.0.0.1" and flag(a, "--port") == "8001"
    assert flag(a, "--backend") == "pytorch" and flag(a, "--tp_size") == "2"
    assert flag(a, "--max_batch_size") == "256" and flag(a, "--max_seq_len") == "4096"
    assert flag(a, "--kv_cache_free_gpu_memory_fraction") == "0.9"
    opts = yaml.safe_load(Path(flag(a, "--extra_llm_api_options")).read_text())
    assert opts == {"load_format": "dummy", "dtype": "bfloat16", "kv_cache_config": {"dtype": "fp8"},
                    "enable_iter_perf_stats": True}
    assert a[-2:] == ["--log_level", "info"]
    assert plan.env["CUDA_VISIBLE_DEVICES"] == "4,5" and plan.served_model_name == "tiny"


def test_minimal_and_refusals(tmp_path):
    plan = trtllm.build_plan(EngineSpec(kind="trtllm", model="Qwen/Qwen3-8B"), "127.0.0.1", 8001, tmp_path)
    assert plan.argv[:2] == ["trtllm-serve", "Qwen/Qwen3-8B"]
    opts = yaml.safe_load(Path(flag(plan.argv, "--extra_llm_api_options")).read_text())
    assert opts == {"enable_iter_perf_stats": True}
    with pytest.raises(ValueError, match="dp > 1"):
        trtllm.build_plan(full_spec(dp=2, gpus=[0, 1, 2, 3]), "127.0.0.1", 1, tmp_path)
    with pytest.raises(ValueError, match="quantization from the checkpoint"):
        trtllm.build_plan(full_spec(quantization="fp8"), "127.0.0.1", 1, tmp_path)


PARSE = r"""
import json, sys, yaml
from tensorrt_llm.commands.serve import serve
ctx = serve.make_context("trtllm-serve", sys.argv[1:])
p = ctx.params
with open(p["extra_llm_api_options"]) as f:
    extra = yaml.safe_load(f)
from tensorrt_llm.llmapi.llm_args import TorchLlmArgs
TorchLlmArgs(model=p["model"], **extra)  # the YAML keys must be real LLM-API fields
print("MELT-PARSED " + json.dumps({k: p.get(k) for k in ("model", "host", "port", "backend", "tensor_parallel_size",
      "max_batch_size", "max_seq_len", "free_gpu_memory_fraction", "kv_cache_free_gpu_memory_fraction", "tp_size")}))
"""


def test_real_trtllm_parser_accepts_our_argv(tmp_path):
    py = os.environ.get("MELT_TRTLLM_PY")
    if not py:
        cmd, _ = find_command("trtllm")
        py = python_of(cmd) if cmd else None
    if not py or subprocess.run([py, "-c", "import tensorrt_llm.commands.serve"], capture_output=True,
                                timeout=600).returncode != 0:
        pytest.skip("TensorRT-LLM is not importable here (set MELT_TRTLLM_PY inside a TRT-LLM container)")
    plan = trtllm.build_plan(full_spec(), "127.0.0.1", 8001, tmp_path)
    out = subprocess.run([py, "-c", PARSE, *plan.argv[1:]], capture_output=True, text=True, timeout=600)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("MELT-PARSED ")), None)
    assert line, f"trtllm-serve rejected our argv:\n{out.stderr[-3000:]}"
    got = json.loads(line.split(" ", 1)[1])
    # click names a param after its first spelling, which moved between releases: accept either
    assert 2 in (got["tensor_parallel_size"], got["tp_size"]) and got["max_batch_size"] == 256
    assert 0.9 in (got["free_gpu_memory_fraction"], got["kv_cache_free_gpu_memory_fraction"])
    assert got["backend"] == "pytorch" and got["max_seq_len"] == 4096
