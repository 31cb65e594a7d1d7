"""EngineSpec -> LaunchPlan for the simulator. Pure: no I/O besides reading the catalog (which fails early, with
close matches, on an unknown GPU or model, instead of after a process start).

A sim instance is one engine over `tp` simulated GPUs (`gpus`, when given, are the box positions its telemetry is
labelled with); DP replicas are separate instances (bench/deploy.py)."""
from __future__ import annotations

import sys
from pathlib import Path

from catalog import get_gpu, get_model
from engines.spec import EngineSpec, LaunchPlan

# `python -m engines.sim` must import Melt's packages: run it from the repository root.
REPO_ROOT = Path(__file__).resolve().parents[2]


def build_plan(spec: EngineSpec, host: str, port: int, workdir: Path) -> LaunchPlan:
    if spec.kind != "sim":
        raise ValueError(f"sim adapter got an engine spec of kind {spec.kind!r}")
    if not spec.sim_gpu:
        raise ValueError("the sim engine needs sim_gpu: the catalog GPU to emulate (e.g. H100-SXM-80GB)")
    if spec.dp != 1:
        raise ValueError("a sim instance is one engine: dp must be 1 (a recipe's DP replicas become separate sim "
                         "instances, bench/deploy.py)")
    if spec.gpus is not None and len(spec.gpus) != spec.tp:
        raise ValueError(f"a sim instance at tp={spec.tp} models {spec.tp} GPU(s), {len(spec.gpus)} given "
                         f"({spec.gpus})")
    gpu = get_gpu(spec.sim_gpu)
    model = get_model(spec.model)
    served = spec.served_model_name or spec.model

    argv = list(spec.engine_cmd) if spec.engine_cmd else [sys.executable, "-m", "engines.sim"]
    argv += ["--gpu", gpu.id, "--model", model.id, "--host", host, "--port", str(port),
             "--served-model-name", served]
    if spec.tp != 1:
        argv += ["--tensor-parallel-size", str(spec.tp)]
    if spec.gpus is not None:  # the box positions it models (telemetry labels); no real GPU is used
        argv += ["--gpu-indices", ",".join(str(g) for g in spec.gpus)]
    if spec.max_seqs is not None:
        argv += ["--max-num-seqs", str(spec.max_seqs)]
    if spec.mem_fraction is not None:
        argv += ["--mem-fraction", str(spec.mem_fraction)]
    if spec.max_model_len is not None:
        argv += ["--max-model-len", str(spec.max_model_len)]
    if spec.dtype:
        argv += ["--dtype", spec.dtype]
    if spec.quantization:
        argv += ["--quantization", spec.quantization]
    if spec.kv_cache_dtype:
        argv += ["--kv-cache-dtype", spec.kv_cache_dtype]
    if spec.sim_host_profile:
        argv += ["--host-profile", spec.sim_host_profile]
    argv += list(spec.extra_args)

    return LaunchPlan(
        argv=argv,
        env={"PYTHONUNBUFFERED": "1"},
        cwd=REPO_ROOT,
        host=host,
        port=port,
        health_path="/health",
        served_model_name=served,
        simulated=True,
        phase_patterns=[(r"^melt-sim \{", "modelling"), (r"^melt-sim ready", "serving (simulated)")],
    )
