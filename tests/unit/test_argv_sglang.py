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


# ------------------------------------------------------------------------ SGLang 0.5.14 (the GPU image's torch)

def _sglang_source(version: str) -> Path | None:
    """server_args.py of an unpacked SGLang wheel: MELT_SGLANG_SRC_<version with _> (a site dir), else the one
    scripts/install_sglang_parser.sh PYTHON VERSION unpacked into the real per-user data dir."""
    import platformdirs

    env = os.environ.get(f"MELT_SGLANG_SRC_{version.replace('.', '_')}")
    root = Path(env) if env else (Path(platformdirs.user_data_dir("melt", appauthor=False)) / "engines"
                                  / f"sglang-args-{version}" / "site")
    f = root / "sglang" / "srt" / "server_args.py"
    return f if f.exists() else None


def server_args_fields(source: str) -> dict[str, dict]:
    """{field name: {"choices": [...] or None}} of the ServerArgs dataclass, read from its source (ast, no import).
    In 0.5.14 every CLI flag is derived from a field (add_cli_args_from_dataclass: model_path -> --model-path);
    a field's Arg(choices=[...]) becomes the flag's choices."""
    import ast

    tree = ast.parse(source)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ServerArgs")
    out: dict[str, dict] = {}
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            choices = None
            for sub in ast.walk(node.annotation):
                if isinstance(sub, ast.keyword) and sub.arg == "choices" and isinstance(sub.value, ast.List):
                    choices = [ast.literal_eval(e) for e in sub.value.elts]
            out[node.target.id] = {"choices": choices}
    return out


def test_sglang_0_5_14_defines_every_flag_we_pass(tmp_path):
    src = _sglang_source("0.5.14")
    if src is None:
        pytest.skip("SGLang 0.5.14's source is not unpacked (bash scripts/install_sglang_parser.sh PYTHON 0.5.14)")
    meta = next(src.parents[2].glob("sglang-0.5.14.dist-info/METADATA")).read_text()
    assert "Version: 0.5.14" in meta and "Requires-Dist: torch==2.11.0" in meta  # the release the image's torch fits
    fields = server_args_fields(src.read_text())
    assert len(fields) > 200  # really the ServerArgs class, not a stub
    plan = sglang.build_plan(full_spec(dp=2, gpus=[0, 1, 2, 3]), "127.0.0.1", 30001, tmp_path)
    flags = [a for a in plan.argv[3:] if a.startswith("--")]
    missing = [f for f in flags if f[2:].replace("-", "_") not in fields]
    assert not missing, f"flags SGLang 0.5.14 does not define: {missing}"
    kv = flag(plan.argv, "--kv-cache-dtype")
    assert kv in fields["kv_cache_dtype"]["choices"]
    # the KV dtypes Melt maps that 0.5.14 lacks (0.5.23 added them): the adapter's table says which
    only_new = {v for v in sglang.KV_DTYPES.values() if v not in fields["kv_cache_dtype"]["choices"]}
    assert only_new == {"mxfp8", "nvfp4"}
    assert set(fields["load_format"]["choices"] or ["dummy"]) >= {"dummy"}
