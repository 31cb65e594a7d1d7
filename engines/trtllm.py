"""TensorRT-LLM adapter: EngineSpec -> `trtllm-serve MODEL` argv + an --extra_llm_api_options YAML in workdir.

Flags checked against NVIDIA/TensorRT-LLM tensorrt_llm/commands/serve.py and llmapi/llm_args.py (1.x
sources; see docs/ENGINES.md). Not run here: TRT-LLM 1.2 has no installable wheel for this machine.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from engines.dummy import model_path_for
from engines.registry import launch_env
from engines.spec import EngineSpec, LaunchPlan

DEFAULT_CMD = ["trtllm-serve"]

PHASE_PATTERNS: list[tuple[str, str]] = [
    (r"[Ll]oading (model )?weights|Loading checkpoint|load_weights", "loading weights"),
    (r"torch\.compile|[Aa]utotun", "compiling"),
    (r"[Cc]apturing (CUDA|cuda) graph|cuda_graph", "capturing CUDA graphs"),
    (r"Application startup complete|Uvicorn running", "ready"),
]


def build_plan(spec: EngineSpec, host: str, port: int, workdir: Path) -> LaunchPlan:
    if spec.dp > 1:
        raise ValueError("TensorRT-LLM serves one replica per trtllm-serve; start several engines instead of dp > 1")
    workdir = Path(workdir)
    served = spec.name_for_requests
    # trtllm-serve has no --served-model-name: it answers /v1/models with the model dir's name and does not
    # check the request's "model" field, so requests may keep using `served`.
    argv = list(spec.engine_cmd or DEFAULT_CMD) + [
        model_path_for(spec, workdir),
        "--host", host,
        "--port", str(port),
        "--backend", "pytorch",
    ]
    if spec.tp > 1:
        argv += ["--tp_size", str(spec.tp)]
    if spec.max_seqs is not None:
        argv += ["--max_batch_size", str(spec.max_seqs)]
    if spec.max_model_len is not None:
        argv += ["--max_seq_len", str(spec.max_model_len)]
    if spec.mem_fraction is not None:
        # NOT the same quantity as vLLM's: the fraction of memory still FREE after weights and buffers that
        # goes to the KV cache. Passed through as given; docs/ENGINES.md explains how to compare.
        argv += ["--kv_cache_free_gpu_memory_fraction", f"{spec.mem_fraction:g}"]

    options: dict = {"enable_iter_perf_stats": True}  # feeds the /metrics endpoint
    if spec.dummy_weights:
        options["load_format"] = "dummy"
    if spec.dtype:
        options["dtype"] = spec.dtype
    if spec.kv_cache_dtype and spec.kv_cache_dtype != "auto":
        options["kv_cache_config"] = {"dtype": "fp8" if spec.kv_cache_dtype.startswith("fp8") else spec.kv_cache_dtype}
    if spec.quantization:
        # The PyTorch backend reads quantization from the checkpoint (e.g. an FP8 ModelOpt export); there is no
        # on-the-fly switch to pass. Refuse rather than run something else than asked.
        raise ValueError("TensorRT-LLM takes quantization from the checkpoint; serve a quantized checkpoint "
                         "instead of setting quantization")
    workdir.mkdir(parents=True, exist_ok=True)
    opts_path = workdir / "trtllm-extra-options.yaml"
    opts_path.write_text(yaml.safe_dump(options, sort_keys=True))
    argv += ["--extra_llm_api_options", str(opts_path)]
    argv += list(spec.extra_args)
    return LaunchPlan(argv=argv, env=launch_env(spec), host=host, port=port, health_path="/health",
                      served_model_name=served, simulated=False, phase_patterns=PHASE_PATTERNS)
