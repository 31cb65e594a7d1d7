"""llama.cpp adapter: EngineSpec -> `python -m llama_cpp.server` argv (the OpenAI-compatible server of
`llama-cpp-python[server]`). Pure, except that dummy weights write a GGUF under workdir (engines/gguf_dummy.py).

Flags checked against llama-cpp-python 0.3.36 (llama_cpp/server/settings.py: ModelSettings + ServerSettings; the CLI
makes one `--<field_name>` per field, underscores kept, booleans take a value: `--interrupt_requests False`).
What this server is, measured (docs/ENGINES.md):
  - it serves ONE request at a time (an asyncio lock around the model): concurrency only queues requests, and
    `interrupt_requests` (default True) would end the stream in flight whenever another request arrives, so Melt
    always passes `--interrupt_requests False`;
  - it has no /metrics and no /health: readiness is GET /v1/models + Melt's 1-token completion;
  - its streams carry no usage (no stream_options support), so its streamed token counts cannot come from usage:
    the plan says so (`stream_usage="finish-length"`, see bench/loadgen.py) and every level is labelled;
  - `ignore_eos` is not a field: `min_tokens` (a logits processor that masks EOS) holds the output length.
Settings mapped: max_model_len -> --n_ctx, gpus -> --n_gpu_layers -1 (all layers; the CUDA build) else 0,
kv_cache_dtype f16/q8_0/q4_0 -> --type_k/--type_v (GGML type ids). tp/dp > 1, mem_fraction, max_seqs > 1 and dtype
have no meaning for this server and are refused (a spec that asks for them would measure something else).
"""
from __future__ import annotations

from pathlib import Path

from engines.registry import launch_env
from engines.spec import EngineSpec, LaunchPlan

DEFAULT_CMD = ["python3", "-m", "llama_cpp.server"]
DEFAULT_QUANT = "Q8_0"

# GGML type ids (ggml.h enum ggml_type) for the KV cache.
KV_TYPES = {"f16": 1, "fp16": 1, "q8_0": 8, "q4_0": 2, "f32": 0}

# Startup log lines -> phase (llama.cpp's loader prints these with verbose on, the default).
PHASE_PATTERNS: list[tuple[str, str]] = [
    (r"llama_model_loader: loaded meta data", "loading weights"),
    (r"llama_kv_cache|llama_context: constructing", "allocating KV cache"),
    (r"Uvicorn running on", "ready"),
]


def gguf_path_for(spec: EngineSpec, workdir: Path) -> str:
    """The .gguf file to serve: spec.model itself when it is one; for dummy weights a file Melt writes from the
    catalog entry under workdir/dummy-model/ (spec.quantization: Q8_0, the default, or F16), beside the same BPE as a
    tokenizer.json (+ config), which Melt's text prompts are made with (bench.prompts.resolve_tokenizer)."""
    local = Path(spec.model).expanduser()
    if local.suffix == ".gguf" and (local.is_file() or not spec.dummy_weights):
        return str(local)
    if not spec.dummy_weights:
        raise ValueError(f"llama.cpp serves a .gguf file: {spec.model!r} is not one (use --dummy-weights to have "
                         "Melt write one in the catalog model's shape)")
    from catalog.loader import get_model
    from engines.dummy import write_model_dir
    from engines.gguf_dummy import write_gguf

    quant = (spec.quantization or DEFAULT_QUANT).upper()
    model = get_model(spec.model)  # CatalogError naming close matches when unknown
    dest = Path(workdir) / "dummy-model" / f"{model.id.replace('/', '--')}-{quant}.gguf"
    write_model_dir(model, dest.parent)  # tokenizer.json: the very vocabulary and merges the GGUF carries
    if not dest.exists():
        write_gguf(model, dest, quant=quant)
    return str(dest)


def build_plan(spec: EngineSpec, host: str, port: int, workdir: Path) -> LaunchPlan:
    for name, value, ok in (("tp", spec.tp, spec.tp == 1), ("dp", spec.dp, spec.dp == 1),
                            ("mem_fraction", spec.mem_fraction, spec.mem_fraction is None),
                            ("max_seqs", spec.max_seqs, spec.max_seqs in (None, 1)),
                            ("dtype", spec.dtype, not spec.dtype)):
        if not ok:
            raise ValueError(f"llama.cpp (llama-cpp-python's server) has no {name} setting (got {value!r}): it serves "
                             "one GGUF on one process, one request at a time")
    served = spec.name_for_requests
    argv = list(spec.engine_cmd or DEFAULT_CMD) + [
        "--model", gguf_path_for(spec, workdir),
        "--model_alias", served,
        "--host", host,
        "--port", str(port),
        "--interrupt_requests", "False",  # else each new request ends the stream in flight
        "--n_gpu_layers", "-1" if spec.gpus else "0",
    ]
    if spec.max_model_len is not None:
        argv += ["--n_ctx", str(spec.max_model_len)]
    if spec.kv_cache_dtype:
        kv = KV_TYPES.get(spec.kv_cache_dtype.lower())
        if kv is None:
            raise ValueError(f"llama.cpp has no KV-cache type {spec.kv_cache_dtype!r}; use one of {sorted(KV_TYPES)}")
        argv += ["--type_k", str(kv), "--type_v", str(kv)]
    argv += list(spec.extra_args)
    return LaunchPlan(argv=argv, env=launch_env(spec), host=host, port=port, health_path="/v1/models",
                      served_model_name=served, simulated=False, phase_patterns=PHASE_PATTERNS,
                      stream_usage="finish-length", metrics=False)
