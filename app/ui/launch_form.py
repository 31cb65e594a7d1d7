"""The Launch page's form <-> RunConfig, as pure functions (no Streamlit), tested in tests/app.

The form keeps text where people type lists ("1,8,64", "128:1024", "--enforce-eager --seed 1"); this module parses
them with messages that name the field, and validation itself stays in the pydantic models (bench.config).
"""
from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field

from pydantic import ValidationError

from bench.config import SLO, LengthRange, RunConfig, WorkloadSpec
from bench.config import parse_levels as config_parse_levels
from bench.config import parse_rates
from engines.spec import EngineSpec


class LaunchError(ValueError):
    """A form value that cannot become a run; the message names the field."""


@dataclass
class LaunchValues:
    recipe: str = ""                       # a recipe (file or bundled name): a deployment of several instances
    engine: str = "sim"
    model: str = "Qwen/Qwen3-0.6B"
    dummy_weights: bool = False
    gpu: str | None = None                 # catalog id (what the sim emulates; price/labels for real engines)
    gpu_indices: list[int] | None = None   # detected NVML GPUs chosen (real engines)
    gpu_count: int = 1                     # when no GPU indices are chosen
    mem_fraction: float | None = None
    max_seqs: int | None = None
    max_model_len: int | None = None
    dtype: str = "auto"
    quantization: str = "none"
    kv_cache_dtype: str = "auto"
    tp: int = 1
    dp: int = 1
    extra_args: str = ""
    engine_cmd: str = ""
    base_url: str = ""
    levels: str = "1,4,16,64"
    stop_by: str = "steady"                # steady (the default rule) | requests | duration
    requests: int | None = 200
    duration_s: float | None = 30.0
    min_steady_s: float = 30.0             # steady: seconds of steady state per level ...
    min_requests_per_user: int = 5         # ... and measured requests per user
    warmup: int = 0
    arrivals: str = "closed"               # closed (each user sends when its last request ends) | rate
    rates: str = "10"                      # rate: one rate (req/s) or a sweep "5,10,20", concurrency as the cap
    burstiness: float = 1.0                # rate: gamma shape, 1 = Poisson
    ramp_up: str = "auto"                  # closed: "auto" or seconds (0 = all users at once)
    connect_at_go: bool = False            # users open their connections inside the level (as vllm bench)
    repeat: int = 1
    input_len: str = "512"
    output_len: str = "128"
    endpoint: str = "completions"
    prompt_format: str = "text"            # text | token-ids (bench.prompts)
    tokenizer: str = ""                    # "" = the served model's own
    prefix_len: int = 0
    slo_ttft_ms: float = 0.0               # 0 = no SLO
    slo_tpot_ms: float = 0.0
    slo_e2e_ms: float = 0.0
    mode: str = "sweep"                    # sweep (the levels above) | slo (bisect for the highest one meeting SLOs)
    slo_preset: str = "interactive"        # slo mode: interactive | standard (MLPerf, by model size) | custom
    slo_percentile: int = 99               # slo mode, custom: the percentile the TTFT/TPOT/E2E limits apply to
    slo_start: int = 1
    slo_max: int = 1024
    alerts: str = ""                       # alert overrides, one RULE=WARN,CRIT per line (bench.alerts)
    gpu_metrics_url: str = ""              # a DCGM exporter of the engine's host
    price: float | None = None
    name: str = ""
    tags: str = ""
    extra: dict = field(default_factory=dict)


def parse_levels(text: str) -> list[int]:
    try:
        return config_parse_levels(text)
    except ValueError as e:
        raise LaunchError(f"Concurrency levels: {e}") from None


def parse_tags(text: str) -> list[str]:
    out: list[str] = []
    for t in str(text).split(","):
        t = t.strip()
        if t and t not in out:
            out.append(t)
    return out


def _length(label: str, text: str, role: str = "input") -> LengthRange:
    try:
        return LengthRange.parse(text, role)
    except ValidationError as e:  # a ValueError too: str() of it is pydantic's dump with a docs link
        raise LaunchError(f"{label}: {plain_errors(e)}") from None
    except ValueError as e:
        raise LaunchError(f"{label}: {e}") from None


def parse_ramp(text: str) -> float | None:
    """"auto" (or empty) -> None (the default ramp), else seconds >= 0."""
    t = str(text).strip().lower()
    if t in ("", "auto"):
        return None
    try:
        v = float(t)
    except ValueError:
        raise LaunchError(f"Ramp-up: {text!r} is not a number of seconds (or 'auto')") from None
    if not v >= 0:
        raise LaunchError("Ramp-up: seconds must be >= 0 (0 = every user starts at once)")
    return v


def _rates(v: "LaunchValues") -> tuple[float | None, list[float] | None]:
    """(request_rate, rates) of the form: closed loop (None, None), one rate, or a rate sweep."""
    if v.arrivals != "rate":
        return None, None
    try:
        rates = parse_rates(v.rates)
    except ValueError as e:
        raise LaunchError(f"Request rates: {e}") from None
    return (rates[0], None) if len(rates) == 1 else (None, rates)


def plain_errors(e: ValidationError) -> str:
    """A pydantic ValidationError in plain words: each message without pydantic's "Value error, " prefix, its input
    echo or its documentation link."""
    return "; ".join(str(err.get("msg", "")).removeprefix("Value error, ") for err in e.errors())


def _none_if(v, *empty):
    return None if v in empty else v


def parse_alerts(text: str):
    """Alert overrides, one 'RULE=WARN,CRIT' per line (or ';'-separated), over the defaults."""
    from bench.alerts import AlertThresholds

    th = AlertThresholds()
    for part in str(text).replace(";", "\n").splitlines():
        if part.strip():
            try:
                th = th.with_override(part.strip())
            except ValueError as e:
                raise LaunchError(f"Alerts: {plain_errors(e) if isinstance(e, ValidationError) else e}") from None
    return th


def slo_search_spec(v: LaunchValues):
    """The SLO search of the form (mode 'slo'): a preset's MLPerf limits for the model's size, or the SLO fields
    at the chosen percentile."""
    from bench.slo_search import Limit, SloSearchSpec, mlperf_preset

    if v.slo_preset in ("interactive", "standard"):
        from catalog import CatalogError, get_model

        try:
            size = get_model(v.model.strip()).total_params_b
        except CatalogError:
            size = None
        limits, row = mlperf_preset(v.slo_preset, size)
        preset = f"mlperf-{v.slo_preset} ({row} limits)"
    else:
        limits = [Limit(metric=m, percentile=v.slo_percentile, max_ms=ms)
                  for m, ms in (("ttft", v.slo_ttft_ms), ("tpot", v.slo_tpot_ms), ("e2e", v.slo_e2e_ms)) if ms]
        preset = None
        if not limits:
            raise LaunchError("SLO search: set at least one of the TTFT / TPOT / E2E limits (or pick a preset)")
    try:
        return SloSearchSpec(limits=limits, start=v.slo_start, max_value=v.slo_max, preset=preset)
    except ValidationError as e:
        raise LaunchError(f"SLO search: {plain_errors(e)}") from None


def build_run_config(v: LaunchValues) -> RunConfig:
    """Form values -> validated RunConfig, or LaunchError with a message for the person at the form."""
    search = slo_search_spec(v) if v.mode == "slo" else None
    levels = parse_levels(v.levels) if search is None else [int(search.start)]
    deployed = recipe_deployment(v) if v.recipe.strip() else None
    if deployed is None and not v.model.strip():
        raise LaunchError("Model: pick a catalog model or type an id/path")
    if deployed is None and v.engine == "sim" and not v.gpu:
        raise LaunchError("GPU: the simulator needs a catalog GPU to emulate")
    if deployed is None and v.engine == "openai" and not v.base_url.strip():
        raise LaunchError("Server URL: give the running server's base URL, e.g. http://127.0.0.1:8000")
    try:
        extra = shlex.split(v.extra_args) if v.extra_args.strip() else []
    except ValueError as e:
        raise LaunchError(f"Extra engine args: {e}") from None
    try:
        cmd = shlex.split(v.engine_cmd) if v.engine_cmd.strip() else None
    except ValueError as e:
        raise LaunchError(f"Engine command: {e}") from None
    gpus = list(v.gpu_indices) if v.gpu_indices else None
    if deployed is None and gpus and v.engine not in ("sim", "openai") and v.tp * v.dp != len(gpus):
        raise LaunchError(f"TP {v.tp} × DP {v.dp} = {v.tp * v.dp} GPUs, but {len(gpus)} selected")
    by_requests = v.stop_by == "requests"
    by_duration = v.stop_by == "duration"
    rate, rates = _rates(v)
    ramp = parse_ramp(v.ramp_up)
    try:
        spec = deployed.instances[0].engine if deployed else EngineSpec(
            kind=v.engine, model=v.model.strip(), sim_gpu=v.gpu if v.engine == "sim" else None,
            base_url=v.base_url.strip() or None if v.engine == "openai" else None,
            engine_cmd=cmd if v.engine not in ("sim", "openai") else None,
            dummy_weights=v.dummy_weights and v.engine not in ("sim", "openai"),
            gpus=gpus if v.engine not in ("sim", "openai") else None, tp=v.tp, dp=v.dp,
            mem_fraction=v.mem_fraction, max_seqs=_none_if(v.max_seqs, 0), max_model_len=_none_if(v.max_model_len, 0),
            dtype=_none_if(v.dtype, "auto", ""), quantization=_none_if(v.quantization, "none", ""),
            kv_cache_dtype=_none_if(v.kv_cache_dtype, "auto", ""), extra_args=extra)
        slo = SLO(ttft_ms=v.slo_ttft_ms or None, tpot_ms=v.slo_tpot_ms or None, e2e_ms=v.slo_e2e_ms or None)
        if search is not None:  # goodput there as vllm bench serve's --goodput: each limit per request
            slo = SLO(**{f"{x.metric}_ms": x.max_ms for x in search.limits})
        workload = WorkloadSpec(
            input_len=_length("Input length", v.input_len),
            output_len=_length("Output length", v.output_len, "output"), endpoint=v.endpoint,
            prompt_format=v.prompt_format, tokenizer=v.tokenizer.strip() or None, prefix_len=v.prefix_len,
            requests=(v.requests or None) if by_requests else None,
            duration_s=v.duration_s if by_duration else None, warmup_requests=v.warmup,
            min_steady_s=v.min_steady_s, min_requests_per_user=v.min_requests_per_user, request_rate=rate,
            rates=rates, burstiness=v.burstiness if v.arrivals == "rate" else 1.0, ramp_up_s=ramp,
            preconnect=not v.connect_at_go, slo=slo)
        count = len(gpus) if gpus else (v.gpu_count if v.engine in ("sim", "openai") else max(v.tp * v.dp, v.gpu_count))
        if deployed:
            return RunConfig(name=v.name.strip() or deployed.recipe, tags=parse_tags(v.tags), engine=spec,
                             instances=deployed.instances, services=deployed.services, recipe=deployed.recipe,
                             workload=workload, levels=levels,
                             gpu=deployed.gpu, gpu_count=deployed.count, price_per_gpu_hour=v.price, repeat=v.repeat)
        return RunConfig(name=v.name.strip(), tags=parse_tags(v.tags), engine=spec, workload=workload, levels=levels,
                         gpu=v.gpu or None, gpu_count=count, price_per_gpu_hour=v.price, repeat=v.repeat,
                         slo_search=search, alerts=parse_alerts(v.alerts),
                         gpu_metrics_url=v.gpu_metrics_url.strip() or None)
    except ValidationError as e:
        msgs = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or 'settings'}: {err['msg']}" for err in e.errors())
        raise LaunchError(f"Invalid settings: {msgs}") from None


def recipe_deployment(v: LaunchValues):
    """The form's recipe as a deployment (bench.deploy.DeployPlan plus .recipe, its name), planned on the form's GPU
    kind when the recipe names none; LaunchError with the recipe's bad field or the planner's refusal."""
    from bench.deploy import DeployRefused, deployment_from_recipe
    from catalog.recipes import RecipeError, load_recipe

    try:
        recipe = load_recipe(v.recipe.strip())
        cmd = shlex.split(v.engine_cmd) if v.engine_cmd.strip() else None
        d = deployment_from_recipe(recipe, gpu=recipe.gpu or v.gpu, engine_cmd=cmd, dummy_weights=v.dummy_weights)
    except (RecipeError, DeployRefused, ValueError) as e:
        raise LaunchError(f"Recipe: {e}") from None
    return d


def recipe_rows(config: RunConfig) -> list[dict]:
    """One row per instance of a deployment, for the Launch page's table."""
    return [{"instance": d.name, "engine": d.engine.kind, "model": d.engine.name_for_requests,
             "GPUs": ",".join(map(str, d.engine.gpus or [])) or "-", "TP×DP": f"{d.engine.tp}×{d.engine.dp}",
             "memory setting": "-" if d.engine.mem_fraction is None else f"{d.engine.mem_fraction:g}",
             "traffic %": f"{100 * d.weight / sum(x.weight for x in config.instances):.0f}"}
            for d in config.instances]


def sim_error_lines(config: RunConfig | None) -> list[str]:
    """The expected error of a single-engine sim run's planned levels (engines.sim.accuracy): the concurrency levels
    of a sweep, the first and last probe of an SLO search. [] for anything else."""
    if config is None or config.instances or config.engine.kind != "sim":
        return []
    from bench.report import sim_run_notes

    search = config.slo_search
    levels = (config.levels if search is None else [int(search.start), int(search.max_value)]
              if search.mode == "concurrency" else [search.concurrency_cap])
    return sim_run_notes(levels, config.engine.model, config.engine.sim_gpu or config.gpu, config)


def values_from_config(cfg: dict) -> LaunchValues:
    """A stored run's config -> form values ('open in Launch' / run again with changes). Unknown keys are ignored."""
    c = RunConfig.model_validate(cfg)
    e, w = c.engine, c.workload
    return LaunchValues(
        recipe=c.recipe or "" if c.instances else "",
        engine=e.kind, model=e.model, dummy_weights=e.dummy_weights, gpu=c.gpu or e.sim_gpu, gpu_indices=e.gpus,
        gpu_count=c.gpu_count, mem_fraction=e.mem_fraction, max_seqs=e.max_seqs, max_model_len=e.max_model_len,
        dtype=e.dtype or "auto", quantization=e.quantization or "none", kv_cache_dtype=e.kv_cache_dtype or "auto",
        tp=e.tp, dp=e.dp, extra_args=shlex.join(e.extra_args), engine_cmd=shlex.join(e.engine_cmd or []),
        base_url=e.base_url or "", levels=",".join(map(str, c.levels)),
        stop_by="duration" if w.duration_s is not None else "requests" if w.requests is not None else "steady",
        requests=w.requests if w.requests is not None else LaunchValues.requests,
        duration_s=w.duration_s if w.duration_s is not None else LaunchValues.duration_s, warmup=w.warmup_requests,
        min_steady_s=w.min_steady_s, min_requests_per_user=w.min_requests_per_user,
        arrivals="rate" if (w.request_rate is not None or w.rates) else "closed",
        rates=",".join(f"{r:g}" for r in (w.rates or ([w.request_rate] if w.request_rate else []))) or LaunchValues.rates,
        burstiness=w.burstiness, ramp_up="auto" if w.ramp_up_s is None else f"{w.ramp_up_s:g}", repeat=c.repeat,
        connect_at_go=not w.preconnect,
        input_len=str(w.input_len), output_len=str(w.output_len), endpoint=w.endpoint,
        prompt_format=w.prompt_format, tokenizer=w.tokenizer or "", prefix_len=w.prefix_len,
        slo_ttft_ms=w.slo.ttft_ms or 0.0, slo_tpot_ms=w.slo.tpot_ms or 0.0, slo_e2e_ms=w.slo.e2e_ms or 0.0,
        price=c.price_per_gpu_hour, name=c.name, tags=", ".join(c.tags), **_search_values(c),
        alerts=alert_lines(c.alerts), gpu_metrics_url=c.gpu_metrics_url or "")


def _search_values(c: RunConfig) -> dict:
    s = c.slo_search
    if s is None:
        return {}
    preset = next((p for p in ("interactive", "standard") if (s.preset or "").startswith(f"mlperf-{p}")), "custom")
    out = {"mode": "slo", "slo_preset": preset, "slo_start": int(s.start), "slo_max": int(s.max_value),
           "slo_percentile": s.limits[0].percentile}
    return out  # custom limits come back through workload.slo, which the search's limits set


def alert_lines(th) -> str:
    """The rules of `th` that differ from the defaults, one 'RULE=WARN,CRIT' per line."""
    from bench.alerts import RULES, AlertThresholds

    base = AlertThresholds()
    fmt = lambda x: "off" if x is None else f"{x:g}"  # noqa: E731
    return "\n".join(f"{r}={fmt(getattr(th, r).warning)},{fmt(getattr(th, r).critical)}" for r in RULES
                     if getattr(th, r) != getattr(base, r))


def as_dict(v: LaunchValues) -> dict:
    return asdict(v)


def match_catalog_gpu(nvml_name: str | None, catalog: dict) -> str | None:
    """Catalog id for a detected GPU name via each entry's nvml_names substrings (longest match wins)."""
    from catalog.loader import match_nvml_name

    return match_nvml_name(nvml_name, catalog)


def form_problems(v: LaunchValues) -> list[str]:
    """Every problem of the form at once (the fields people type are checked each on its own), then whatever
    build_run_config finds in the rest; [] when the form makes a valid run."""
    out: list[str] = []
    levels_check = (lambda: parse_levels(v.levels)) if v.mode != "slo" else (lambda: None)
    for check in (levels_check, lambda: _length("Input length", v.input_len),
                  lambda: _length("Output length", v.output_len), lambda: build_run_config(v)):
        try:
            check()
        except LaunchError as e:
            if str(e) not in out:
                out.append(str(e))
    return out
