"""SGLang adapter: EngineSpec -> `python -m sglang.launch_server` argv + env. Pure (writes only the dummy model
dir under workdir).

Flags checked against the sglang 0.5.23 wheel (sglang/srt/arg_groups/fields/*.py: flags are derived from the
ServerArgs field names, model_path -> --model-path). See docs/ENGINES.md.
"""
from __future__ import annotations

from pathlib import Path

from engines.dummy import model_path_for
from engines.registry import launch_env
from engines.spec import EngineSpec, LaunchPlan

DEFAULT_CMD = ["python3", "-m", "sglang.launch_server"]

# 0.5.23 choices: auto, fp8_e5m2, fp8_e4m3, mxfp8, bf16, bfloat16, nvfp4, fp4_mx_block16 (no plain "fp8").
KV_DTYPES = {"fp8": "fp8_e4m3", "fp8_e4m3": "fp8_e4m3", "fp8_e5m2": "fp8_e5m2", "auto": "auto",
             "bf16": "bf16", "bfloat16": "bfloat16", "mxfp8": "mxfp8", "nvfp4": "nvfp4"}

# Startup log lines -> phase (strings grep-checked in the 0.5.23 sources).
PHASE_PATTERNS: list[tuple[str, str]] = [
    (r"Load weight begin", "loading weights"),
    (r"Memory pool end|KV Cache is allocated", "allocating KV cache"),
    (r"Capture cuda graph|Capturing batches", "capturing CUDA graphs"),
    (r"torch\.compile|Compiling", "compiling"),
    (r"fired up and ready to roll", "ready"),
]


def build_plan(spec: EngineSpec, host: str, port: int, workdir: Path) -> LaunchPlan:
    served = spec.name_for_requests
    argv = list(spec.engine_cmd or DEFAULT_CMD) + [
        "--model-path", model_path_for(spec, workdir),
        "--served-model-name", served,
        "--host", host,
        "--port", str(port),
        "--enable-metrics",  # /metrics is off by default in SGLang
    ]
    if spec.dummy_weights:
        argv += ["--load-format", "dummy"]
    if spec.tp > 1:
        argv += ["--tp-size", str(spec.tp)]
    if spec.dp > 1:
        argv += ["--dp-size", str(spec.dp)]
    if spec.mem_fraction is not None:
        # Fraction of TOTAL GPU memory for static allocation (weights + KV pool): close to vLLM's meaning,
        # but activations come on top, so the same number leaves SGLang slightly less KV cache.
        argv += ["--mem-fraction-static", f"{spec.mem_fraction:g}"]
    if spec.max_seqs is not None:
        argv += ["--max-running-requests", str(spec.max_seqs)]
    if spec.max_model_len is not None:
        argv += ["--context-length", str(spec.max_model_len)]
    if spec.dtype:
        argv += ["--dtype", spec.dtype]
    if spec.quantization:
        argv += ["--quantization", spec.quantization]
    if spec.kv_cache_dtype:
        kv = KV_DTYPES.get(spec.kv_cache_dtype)
        if kv is None:
            raise ValueError(f"SGLang has no KV-cache dtype {spec.kv_cache_dtype!r}; use one of {sorted(KV_DTYPES)}")
        argv += ["--kv-cache-dtype", kv]
    argv += list(spec.extra_args)
    return LaunchPlan(argv=argv, env=launch_env(spec), host=host, port=port, health_path="/health",
                      served_model_name=served, simulated=False, phase_patterns=PHASE_PATTERNS)
