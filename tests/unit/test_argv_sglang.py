"""SGLang argv building; plus SGLang's own parser on it when an SGLang install can be found."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from engines import sglang
from engines.registry import find_command, python_of
from engines.spec import EngineSpec


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def full_spec(**kw) -> EngineSpec:
    base = dict(kind="sglang", model="melt/tiny-qwen3", served_model_name="tiny", dummy_weights=True, gpus=[0, 1],
                tp=2, mem_fraction=0.8, max_seqs=64, max_model_len=2048, dtype="bfloat16", quantization="fp8",
                kv_cache_dtype="fp8", extra_args=["--random-seed", "3"])
    base.update(kw)
    return EngineSpec(**base)


def test_every_spec_field_reaches_argv(tmp_path):
    plan = sglang.build_plan(full_spec(), "127.0.0.1", 30001, tmp_path)
    a = plan.argv
    assert a[:3] == ["python3", "-m", "sglang.launch_server"]
    assert flag(a, "--model-path") == str(tmp_path / "dummy-model")
    assert flag(a, "--served-model-name") == "tiny"
    assert flag(a, "--host") == "127.0.0.1" and flag(a, "--port") == "30001"
    assert "--enable-metrics" in a  # SGLang serves /metrics only when asked
    assert flag(a, "--load-format") == "dummy"
    assert flag(a, "--tp-size") == "2" and "--dp-size" not in a
    assert flag(a, "--mem-fraction-static") == "0.8"
    assert flag(a, "--max-running-requests") == "64"
    assert flag(a, "--context-length") == "2048"
    assert flag(a, "--dtype") == "bfloat16" and flag(a, "--quantization") == "fp8"
    assert flag(a, "--kv-cache-dtype") == "fp8_e4m3"  # SGLang 0.5.23 has no plain "fp8"
    assert a[-2:] == ["--random-seed", "3"]
    assert plan.env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert plan.served_model_name == "tiny" and plan.health_path == "/health"


def test_dp_and_unknown_kv_dtype(tmp_path):
    plan = sglang.build_plan(full_spec(tp=1, dp=2, kv_cache_dtype="fp8_e5m2"), "127.0.0.1", 1, tmp_path)
    assert flag(plan.argv, "--dp-size") == "2" and flag(plan.argv, "--kv-cache-dtype") == "fp8_e5m2"
    with pytest.raises(ValueError, match="no KV-cache dtype 'int3'"):
        sglang.build_plan(full_spec(kv_cache_dtype="int3"), "127.0.0.1", 1, tmp_path)


PARSE = r"""
import argparse, json, sys
import sglang
from sglang.srt.server_args import ServerArgs
p = argparse.ArgumentParser()
ServerArgs.add_cli_args(p)
a = p.parse_args(sys.argv[1:])
keys = ["model_path", "served_model_name", "host", "port", "enable_metrics", "load_format", "tp_size", "dp_size",
        "mem_fraction_static", "max_running_requests", "context_length", "dtype", "quantization", "kv_cache_dtype",
        "random_seed"]
print("MELT-PARSED " + json.dumps({"version": sglang.__version__, **{k: getattr(a, k) for k in keys}}))
"""


def _sglang_python() -> str | None:
    """MELT_SGLANG_PY (optionally with MELT_SGLANG_PYTHONPATH), else the interpreter of a detected install."""
    if os.environ.get("MELT_SGLANG_PY"):
        return os.environ["MELT_SGLANG_PY"]
    cmd, _ = find_command("sglang")
    return python_of(cmd) if cmd else None


def test_real_sglang_parser_accepts_our_argv(tmp_path):
    py = _sglang_python()
    env = dict(os.environ)
    if os.environ.get("MELT_SGLANG_PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["MELT_SGLANG_PYTHONPATH"]
    if not py or subprocess.run([py, "-c", "import sglang.srt.server_args"], env=env, capture_output=True,
                                timeout=300).returncode != 0:
        pytest.skip("SGLang is not importable (set MELT_SGLANG_PY, or install it: python -m bench engines install sglang)")
    plan = sglang.build_plan(full_spec(dp=2, gpus=[0, 1, 2, 3]), "127.0.0.1", 30001, tmp_path)
    flags = plan.argv[3:]
    out = subprocess.run([py, "-c", PARSE, *flags], capture_output=True, text=True, timeout=300, env=env)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("MELT-PARSED ")), None)
    assert line, f"SGLang rejected our argv {flags}:\n{out.stderr[-3000:]}"
    got = json.loads(line.split(" ", 1)[1])
    assert got["model_path"] == str(tmp_path / "dummy-model") and got["served_model_name"] == "tiny"
    assert got["enable_metrics"] is True and got["load_format"] == "dummy"
    assert got["tp_size"] == 2 and got["dp_size"] == 2 and got["mem_fraction_static"] == 0.8
    assert got["max_running_requests"] == 64 and got["context_length"] == 2048
    assert got["kv_cache_dtype"] == "fp8_e4m3" and got["random_seed"] == 3
