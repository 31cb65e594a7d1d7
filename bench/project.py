"""Projection from a measurement (issue #13 item 4): a real vLLM run on one GPU, the simulator's host constants
fitted to that run's own levels, the GPU swapped for another catalog GPU. SIMULATED, and labelled so everywhere.

What: `project(run_id, ["H200-141GB", ...])` reads a finished real vLLM run from the history, fits the engine
loop's CPU costs (per step, per sequence, per prefill) and the request's fixed path with
`engines.sim.fit_host.fit_engine_to` on its least-loaded level (the anchor: tok/s and mean TTFT there), scores the
split on its other levels, and then runs the same workload (lengths, prompt kind, each level's users, requests and
ramp-up) through the simulator's virtual-time closed loop (engines.sim.scheduler) on each target GPU with those
constants. `save_projection` stores each target as a run of its own (`simulated`, engine "sim", `projection` saying
which run it came from, the fit and the expected error), so Compare, Cost and the reports show it beside the
measurement it came from.

Why this way: the GPU side of the sim (roofline, GEMM probe) moves with the catalog GPU, and what does not (the
host's Python: vLLM's engine loop and API server) is what a measured run pins down. The API server's per-request and
per-token CPU cannot be read from a run's client figures alone (Melt does not store the server's CPU per level), so
they are the host profile's (default: a typical datacenter core, `--host` for another, e.g. `melt calibrate-host`'s);
the fit moves part of them between per request and per token, as fit_host does.

Expected error, two parts, both shown: the fit's own residual on the measured run (how well these constants
reproduce it on its GPU; in-sample, so a floor), and the projection check of engines/sim/accuracy.py (constants
fitted on one GPU's runs, projected to another GPU, against that GPU's measured runs: an H100 host and an H200 host).

The same workload means the run's own: each level's users, measured request count (up to MAX_REQUESTS) and ramp-up,
its lengths and prompt kind, and its engine settings as the sim adapter would pass them (`knobs_of`: dtype or
quantization, KV dtype, max seqs, memory fraction, max model len, --max-num-batched-tokens; other engine arguments
are named in the warnings, not modelled).

Refused, with the reason: simulated runs, other engines than vLLM (the sim models vLLM V1), deployments of several
instances, tensor parallel, GPUs or models not in the catalog, a quantization the sim does not know, length
distributions (the fit needs fixed lengths), prefix or file prompts, chat requests, a stored config that no longer
validates, runs without a completed closed-loop level.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any

from catalog import CatalogError, get_gpu, get_model

# The fit's search for a stored run (fit_host's full grid takes minutes per host; a user waits for this one):
# per-sequence CPU 0 / 20 / 40 us, the API's per-request share as the profile has it or 2 ms more, a lone prefill's
# time all CPU or half latency, and its CPU per chunk or per piecewise step.
PER_SEQ_GRID = (0.0, 20e-6, 40e-6)
REQUEST_GRID = (0.0, 2e-3)
LATENCY_GRID = (0.0, 0.5)
CHUNK_GRID = (0.3, 1.0)
# requests simulated per level: the measured level's count (its whole-level figures depend on it: ramp and drain),
# at most this many in all (and at least 2 per user); a level cut to the cap is said in the warnings
MAX_REQUESTS = 16384
# engine arguments that change nothing the sim models for these workloads (random prompts, fixed lengths)
NEUTRAL_ARGS = ("--no-enable-prefix-caching", "--enable-prefix-caching", "--disable-log-requests",
                "--disable-log-stats", "--disable-uvicorn-access-log", "--enable-log-requests")
STEP_MAX_S = 20e-3        # the step overhead's bisection top (a slow host's Python loop, not a GPU's step)


class ProjectionError(ValueError):
    """A run that cannot be projected; the message says why."""


@dataclass(frozen=True)
class SourceLevel:
    concurrency: int
    requests: int           # OK requests measured (mean over repeats)
    output_tok_s: float     # whole-level, vllm bench definitions (mean over repeats)
    mean_ttft_ms: float
    ramp_s: float
    repeats: int


@dataclass(frozen=True)
class Source:
    run_id: int
    uuid: str | None
    name: str
    gpu: str
    model: str
    input_len: int
    output_len: int
    text_prompt: bool
    levels: tuple[SourceLevel, ...]
    skipped: tuple[str, ...]   # levels left out of the fit, and why
    knobs: Any = None          # engines.sim.model.SimKnobs from the run's engine settings (knobs_of)
    notes: tuple[str, ...] = ()   # the run's engine arguments the sim does not model
    config: dict = field(default_factory=dict)   # the projected runs' config (the run's, validated: config_of)


@dataclass(frozen=True)
class ProjectedLevel:
    concurrency: int
    requests: int
    ramp_s: float
    output_tok_s: float
    mean_ttft_ms: float
    p50_ttft_ms: float
    mean_tpot_ms: float
    records: list = field(repr=False, default_factory=list)   # (arrival s, TTFT s, E2E s, output tokens, user)


@dataclass(frozen=True)
class Projection:
    source: Source
    host_profile: str
    fitted: dict[str, float]                          # HostProfile fields the fit set
    fit_check: dict[int, tuple[float, float, float, float]]   # c -> (sim tok/s, real tok/s, sim TTFT, real TTFT)
    warnings: tuple[str, ...]
    targets: dict[str, tuple[ProjectedLevel, ...]]    # target GPU id -> its levels
    elapsed_s: float

    def fit_error(self) -> tuple[float, float]:
        """Largest |sim / real - 1| of output tok/s and of mean TTFT over the fitted run's levels."""
        tok = max(abs(s / r - 1) for s, r, _, _ in self.fit_check.values())
        ttft = max(abs(s / r - 1) for _, _, s, r in self.fit_check.values())
        return tok, ttft

    def summary(self) -> dict[str, Any]:
        """What a projected run stores in runs.projection (JSON)."""
        tok, ttft = self.fit_error()
        return {"from_run": self.source.run_id, "from_uuid": self.source.uuid, "from_name": self.source.name,
                "from_gpu": self.source.gpu, "host_profile": self.host_profile,
                "fitted": {k: float(v) for k, v in self.fitted.items()},
                "fit_check": {str(c): {"sim_output_tok_s": v[0], "real_output_tok_s": v[1], "sim_mean_ttft_ms": v[2],
                                       "real_mean_ttft_ms": v[3]} for c, v in sorted(self.fit_check.items())},
                "fit_error": {"output_tok_s": tok, "mean_ttft": ttft},
                "warnings": list(self.warnings), "skipped": list(self.source.skipped)}


# ------------------------------------------------------------------------------------------------- the source
def _get(obj, key, default=None):
    return obj.get(key, default) if isinstance(obj, dict) else getattr(obj, key, default)


def knobs_of(eng: dict, rid: int):
    """The sim's SimKnobs for a run's engine spec (dict), as the sim adapter passes them (engines/sim/adapter.py):
    weights (dtype / quantization), KV dtype, max seqs, memory fraction, max model len, and
    --max-num-batched-tokens from its extra arguments; plus the arguments the sim does not model."""
    from catalog.quant import QUANT_BYTES
    from engines.sim.model import SimKnobs

    quant = (eng.get("quantization") or "").lower()
    if quant and quant not in QUANT_BYTES and quant not in ("fp8",):
        raise ProjectionError(f"run #{rid} used --quantization {eng.get('quantization')!r}, which the simulator does "
                              f"not model (known: fp8, {', '.join(sorted(QUANT_BYTES))})")
    dtype = (eng.get("dtype") or "bfloat16").lower()
    kw: dict[str, Any] = {"weight_dtype": quant or ("bfloat16" if dtype == "auto" else dtype),
                          "kv_cache_dtype": eng.get("kv_cache_dtype") or "auto"}
    for key, name in (("max_seqs", "max_num_seqs"), ("mem_fraction", "mem_fraction"),
                      ("max_model_len", "max_model_len")):
        if eng.get(key) is not None:
            kw[name] = eng[key]
    args, other = list(eng.get("extra_args") or []), []
    i = 0
    while i < len(args):
        a = str(args[i])
        if a.startswith("--max-num-batched-tokens"):
            value = a.split("=", 1)[1] if "=" in a else (args[i + 1] if i + 1 < len(args) else "")
            i += 1 if "=" in a else 2
            try:
                kw["max_num_batched_tokens"] = int(value)
            except ValueError:
                raise ProjectionError(f"run #{rid}: --max-num-batched-tokens {value!r} is not a number") from None
            continue
        if a.split("=", 1)[0] not in NEUTRAL_ARGS:
            other.append(a)
        i += 1
    try:
        return SimKnobs(**kw), ((f"engine arguments the sim does not model: {' '.join(other)}",) if other else ())
    except ValueError as e:
        raise ProjectionError(f"run #{rid}: its engine settings do not fit the simulator: {e}") from None


def config_of(run) -> dict:
    """The projected runs' config: the measured run's, as one engine (no Blitz, SLO search or rates), validated as a
    RunConfig now, before any fit (an old stored config that no longer validates is refused here, not after)."""
    from bench.config import RunConfig

    cfg = dict(run.config or {})
    wl = {**(cfg.get("workload") or {}), "rates": None}
    cfg.update(workload=wl, instances=[], services=[], blitz=None, slo_search=None, recipe=None)
    for k in ("instances", "services", "blitz", "slo_search", "recipe"):
        if cfg.get(k) in (None, []) and k not in (run.config or {}):
            cfg.pop(k)   # keys the stored config never had stay absent (an older schema)
    try:
        return RunConfig.model_validate(cfg).model_dump(mode="json")
    except Exception as e:  # pydantic.ValidationError
        raise ProjectionError(f"run #{run.id}'s stored config does not validate as today's run config: "
                              f"{str(e).splitlines()[0]}") from None


def source_of(run, levels) -> Source:
    """The measured side of a projection from a Run row and its Level rows; ProjectionError saying why not."""
    rid = run.id
    if run.simulated or run.engine_kind == "sim":
        raise ProjectionError(f"run #{rid} is simulated: a projection starts from a measured run")
    if run.engine_kind != "vllm":
        raise ProjectionError(f"run #{rid} ran {run.engine_kind!r}: the simulator models vLLM only, so only a vLLM "
                              "run can be projected")
    cfg = run.config or {}
    if len(cfg.get("instances") or []) > 1 or cfg.get("services"):
        raise ProjectionError(f"run #{rid} is a deployment of several instances: project a single-engine run")
    eng = cfg.get("engine") or {}
    if (eng.get("tp") or 1) > 1 or (run.gpu_count or 1) > 1:
        raise ProjectionError(f"run #{rid} used {max(eng.get('tp') or 1, run.gpu_count or 1)} GPUs: projections are "
                              "of one GPU (the sim's tensor-parallel terms are not calibrated)")
    try:
        gpu = get_gpu(run.gpu or "").id
    except (CatalogError, KeyError):
        raise ProjectionError(f"run #{rid}'s GPU {run.gpu!r} is not a catalog GPU (assets/gpus.yaml): the fit needs "
                              "its roofline") from None
    try:
        model = get_model(run.model).id
    except (CatalogError, KeyError):
        raise ProjectionError(f"run #{rid}'s model {run.model!r} is not in the catalog (assets/models.yaml)") from None
    wl = cfg.get("workload") or {}
    i, o = wl.get("input_len") or {}, wl.get("output_len") or {}
    if not (i.get("min") == i.get("max") and o.get("min") == o.get("max") and i.get("min") and o.get("min")):
        raise ProjectionError(f"run #{rid} has length ranges ({i.get('min')}-{i.get('max')} in, {o.get('min')}-"
                              f"{o.get('max')} out): a projection needs fixed lengths")
    if wl.get("prefix_len") or wl.get("prompt_file"):
        raise ProjectionError(f"run #{rid} used a shared prefix or a prompt file: not modelled by the simulator")
    if wl.get("endpoint", "completions") != "completions":
        raise ProjectionError(f"run #{rid} used the {wl.get('endpoint')!r} endpoint: the sim's API costs are of "
                              "/v1/completions")
    knobs, notes = knobs_of(eng, rid)
    config = config_of(run)
    by: dict[int, list] = {}
    skipped = []
    for lv in levels:
        s = lv.summary or {}
        c = lv.concurrency
        why = None
        if lv.request_rate is not None:
            why = "a request-rate level"
        elif _get(lv, "status") is None or getattr(_get(lv, "status"), "value", _get(lv, "status")) != "completed":
            why = "not completed"
        elif lv.n_err:
            why = f"{lv.n_err} failed requests"
        elif lv.client_bound:
            why = "client-bound (it measured the client)"
        elif not lv.output_tok_s or not (s.get("ttft_ms") or {}).get("mean"):
            why = "no throughput or TTFT"
        if why:
            skipped.append(f"c={c}: {why}")
            continue
        by.setdefault(c, []).append((lv.n_ok, lv.output_tok_s, s["ttft_ms"]["mean"], float(s.get("ramp_s") or 0.0)))
    if not by:
        raise ProjectionError(f"run #{rid} has no completed closed-loop level without errors to fit")
    out = tuple(SourceLevel(c, round(mean(x[0] for x in v)), mean(x[1] for x in v), mean(x[2] for x in v),
                            mean(x[3] for x in v), len(v)) for c, v in sorted(by.items()))
    return Source(rid, run.uuid, run.name or "", gpu, model, int(i["min"]), int(o["min"]),
                  wl.get("prompt_format", "text") != "token-ids", out, tuple(skipped), knobs, notes, config)


def load_source(run_id: int, db: str | Path | None = None) -> Source:
    from sqlalchemy import select

    from storage.db import open_db
    from storage.models import Level, Run

    factory = open_db(db)
    with factory() as s:
        run = s.get(Run, run_id)
        if run is None:
            raise ProjectionError(f"run #{run_id} not found")
        if not run.status.finished:
            raise ProjectionError(f"run #{run_id} is {run.status.value}: project it once it has finished")
        levels = s.scalars(select(Level).where(Level.run_id == run_id).order_by(Level.idx)).all()
        return source_of(run, levels)


# -------------------------------------------------------------------------------------------------- the fit
def _requests(lv: SourceLevel) -> int:
    return max(2 * lv.concurrency, min(lv.requests, MAX_REQUESTS))


def project_source(src: Source, targets: list[str], host: str | None = None) -> Projection:
    from engines.sim import fit_host
    from engines.sim.host import DEFAULT_HOST, load_host_profile
    from engines.sim.model import DEFAULT_PROFILE, PerfModel
    from engines.sim.scheduler import simulate_closed_loop

    t0 = time.perf_counter()
    gpus = []
    for g in targets:
        try:
            gid = get_gpu(g).id
            if gid not in gpus:          # the same GPU named twice (ids match case-insensitively) is one target
                gpus.append(gid)
        except (CatalogError, KeyError):
            from catalog import load_gpus

            raise ProjectionError(f"unknown target GPU {g!r} (the catalog's: {', '.join(sorted(load_gpus()))})") from None
    if not gpus:
        raise ProjectionError("name at least one target GPU")
    base = load_host_profile(host)
    shape = fit_host.Shape(input_len=src.input_len, output_len=src.output_len,
                           requests=tuple((lv.concurrency, _requests(lv)) for lv in src.levels),
                           ramp_s=tuple((lv.concurrency, lv.ramp_s) for lv in src.levels),
                           anchor=src.levels[0].concurrency, levels=tuple(lv.concurrency for lv in src.levels[1:]))
    real = {}
    for lv in src.levels:
        real[(lv.concurrency, "tok/s")] = lv.output_tok_s
        real[(lv.concurrency, "ttft_ms")] = lv.mean_ttft_ms
    one = len(src.levels) == 1        # nothing to score a split on: the profile's own split, one point
    prior = base.engine_profile(DEFAULT_PROFILE).step_overhead_s
    try:
        fitted, check = fit_host.fit_engine_to(
            real, base, src.gpu, src.model, src.text_prompt, shape=shape, knobs=src.knobs,
            per_seq_grid=(base.engine_per_seq_s or 0.0,) if one else PER_SEQ_GRID,
            request_grid=(0.0,) if one else REQUEST_GRID, latency_grid=(0.0,) if one else LATENCY_GRID,
            chunk_grid=(1.0,) if one else CHUNK_GRID, step_max_s=STEP_MAX_S, step_prior_s=prior, fit_frontend=True,
            score_anchor=True, score_sum=True)
    except CatalogError as e:
        raise ProjectionError(f"run #{src.run_id}: {e}") from None
    # at_bound reads the per-request share the grid moved (fit_host starts it at 0; here the profile has its own)
    moved = {**fitted, "per_request_s": fitted["per_request_s"] - base.per_request_s}
    warnings = list(src.notes) + list(fit_host.at_bound(
        moved, check, (base.engine_per_seq_s or 0.0,) if one else PER_SEQ_GRID, (0.0,) if one else REQUEST_GRID,
        STEP_MAX_S))
    warnings += [f"c={lv.concurrency:,}: simulated with {_requests(lv):,} of its {lv.requests:,} requests"
                 for lv in src.levels if _requests(lv) < lv.requests]
    if fitted["engine_step_s"] == prior:
        a = src.levels[0].concurrency
        warnings.append(f"the step overhead is the host profile's ({prior * 1e3:.2f} ms): at {a:,} user"
                        f"{'' if a == 1 else 's'} the run was GPU-bound, so it cannot tell the engine loop's CPU cost")
    if one:
        warnings.append("one measured level: only the step overhead and a lone prefill's time are fitted; the "
                        "per-sequence and per-request costs are the host profile's")
    if src.levels[0].concurrency > 16:
        warnings.append(f"the least-loaded measured level is {src.levels[0].concurrency} users: the engine's own "
                        "costs are best seen at 1 user")
    fit_check = {c: (check[(c, "tok/s")][0], check[(c, "tok/s")][1], check[(c, "ttft_ms")][0],
                     check[(c, "ttft_ms")][1]) for c in sorted({c for c, k in check if k == "tok/s"})}
    prof = base.model_copy(update=fitted)
    out = {}
    for g in gpus:
        try:
            perf = PerfModel(get_gpu(g), get_model(src.model), src.knobs, host=prof)
        except CatalogError as e:
            raise ProjectionError(f"{src.model} on {g}: {e}") from None
        lvls = []
        for lv in src.levels:
            n = _requests(lv)
            st = simulate_closed_loop(perf, lv.concurrency, n, src.input_len, src.output_len, host=prof,
                                      text_prompt=src.text_prompt, ramp_s=lv.ramp_s)
            lvls.append(ProjectedLevel(lv.concurrency, n, lv.ramp_s, st.output_throughput, st.mean_ttft_ms,
                                       st.p50_ttft_ms, st.mean_tpot_ms, st.records))
        out[g] = tuple(lvls)
    return Projection(src, host or DEFAULT_HOST, fitted, fit_check, tuple(warnings), out,
                      time.perf_counter() - t0)


def project(run_id: int, targets: list[str], db: str | Path | None = None, host: str | None = None) -> Projection:
    return project_source(load_source(run_id, db), targets, host)


# ------------------------------------------------------------------------------------------- the check
def same_workload(src: Source, measured: Source) -> None:
    """ProjectionError unless `measured` ran what `src` did (model, lengths, prompt kind, the sim's knobs of its
    engine settings) at one or more of its levels: what a check of src's projection against measured needs."""
    rid, sid = measured.run_id, src.run_id
    diff = [f"{what} {a!r} vs {b!r}" for what, a, b in (
        ("model", src.model, measured.model),
        ("input tokens", src.input_len, measured.input_len),
        ("output tokens", src.output_len, measured.output_len),
        ("text prompts", src.text_prompt, measured.text_prompt),
        ("engine settings", src.knobs, measured.knobs)) if a != b]
    if diff:
        raise ProjectionError(f"run #{rid} is not the workload of run #{sid}: " + "; ".join(diff))
    theirs, mine = [lv.concurrency for lv in measured.levels], [lv.concurrency for lv in src.levels]
    if not set(theirs) & set(mine):
        raise ProjectionError(f"run #{rid} measured {', '.join(map(str, theirs))} users, run #{sid} "
                              f"{', '.join(map(str, mine))}: no level in common")


def check_against(p: Projection, measured: Source) -> list[tuple[int, float, float, float, float]]:
    """The projection onto `measured.gpu` against a measured run there of the same workload: per level both have,
    (users, projected tok/s, measured tok/s, projected mean TTFT ms, measured mean TTFT ms). ProjectionError when
    the measured run is not that: another GPU than the projection's targets, another model, lengths, prompt kind or
    engine settings (the sim's knobs), or no level in common."""
    rid, sid = measured.run_id, p.source.run_id
    if measured.gpu not in p.targets:
        raise ProjectionError(f"run #{rid} ran on {measured.gpu}, which the projection of run #{sid} was not made "
                              f"onto ({', '.join(p.targets)}): add --gpu {measured.gpu}")
    same_workload(p.source, measured)
    mine = {lv.concurrency: lv for lv in p.targets[measured.gpu]}
    both = [lv for lv in measured.levels if lv.concurrency in mine]
    return [(lv.concurrency, mine[lv.concurrency].output_tok_s, lv.output_tok_s, mine[lv.concurrency].mean_ttft_ms,
             lv.mean_ttft_ms) for lv in both]


def check_table(p: Projection, measured: Source, rows: list[tuple]) -> str:
    """Markdown: the projection against the measured run, per level, and the largest errors."""
    lines = [f"Projection of run #{p.source.run_id} ({p.source.gpu}) onto {measured.gpu} against run "
             f"#{measured.run_id}, measured there:", "",
             "| users | projected tok/s | measured tok/s | err | projected TTFT ms | measured TTFT ms | err |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for c, pt, mt, pf, mf in rows:
        lines.append(f"| {c:,} | {pt:,.0f} | {mt:,.0f} | {pt / mt - 1:+.1%} | {pf:,.1f} | {mf:,.1f} | "
                     f"{pf / mf - 1:+.1%} |")
    tok = max(abs(pt / mt - 1) for _, pt, mt, _, _ in rows)
    ttft = max(abs(pf / mf - 1) for _, _, _, pf, mf in rows)
    same = measured.uuid is not None and measured.uuid == p.source.uuid
    lines += ["", f"largest error: {tok:.1%} output tok/s, {ttft:.1%} mean TTFT over {len(rows)} level"
                  f"{'' if len(rows) == 1 else 's'} " + (f"(in-sample: run #{measured.run_id} is the fitted run)" if same
                                                         else f"(out of sample: run #{measured.run_id} was not fitted)")]
    lines += [f"note: {n}" for n in shape_notes(p.source, measured)]
    return "\n".join(lines)


def shape_notes(src: Source, measured: Source) -> list[str]:
    """Where the two runs' common levels differ in what whole-level figures depend on (the projection simulates the
    source's own): request count by more than a quarter, ramp-up by more than half a second."""
    theirs = {lv.concurrency: lv for lv in measured.levels}
    out = []
    for lv in src.levels:
        m = theirs.get(lv.concurrency)
        if m is None:
            continue
        if abs(m.requests / lv.requests - 1) > 0.25:
            out.append(f"c={lv.concurrency:,}: run #{measured.run_id} measured {m.requests:,} requests, run "
                       f"#{src.run_id} {lv.requests:,} (the projection simulates the latter; ramp and drain weigh "
                       "differently)")
        if abs(m.ramp_s - lv.ramp_s) > 0.5:
            out.append(f"c={lv.concurrency:,}: ramp-up {m.ramp_s:.2f} s against {lv.ramp_s:.2f} s")
    return out


# ------------------------------------------------------------------------------------------------ the words
def expected_lines(p: Projection, gpu: str) -> list[str]:
    """The expected error of one target's projection, in words (shown wherever the projected run is)."""
    from engines.sim.accuracy import projection_band, pct

    tok, ttft = p.fit_error()
    lines = [f"PROJECTED (simulated) from run #{p.source.run_id} on {p.source.gpu} to {gpu}: the fit reproduces the "
             f"measured run within {pct(tok)} output tok/s and {pct(ttft)} mean TTFT (in-sample)"]
    lines.append(projection_band(p.source.gpu, gpu, [lv.concurrency for lv in p.source.levels],
                                 model=p.source.model, text_prompt=p.source.text_prompt, floor=(tok, ttft)))
    lines.extend(f"warning: {w}" for w in p.warnings)
    return lines


def table(p: Projection) -> str:
    """Markdown: per level the measured figures, the fit's on the measured GPU, and each target's projection."""
    gs = list(p.targets)
    head = ["users", f"measured tok/s ({p.source.gpu})", "fit tok/s", "measured TTFT ms", "fit TTFT ms"]
    for g in gs:
        head += [f"{g} tok/s", f"{g} TTFT ms"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for k, lv in enumerate(p.source.levels):
        sim_t, real_t, sim_f, real_f = p.fit_check[lv.concurrency]
        row = [f"{lv.concurrency:,}", f"{real_t:,.0f}", f"{sim_t:,.0f} ({sim_t / real_t - 1:+.1%})", f"{real_f:,.1f}",
               f"{sim_f:,.1f} ({sim_f / real_f - 1:+.1%})"]
        for g in gs:
            t = p.targets[g][k]
            row += [f"{t.output_tok_s:,.0f}", f"{t.mean_ttft_ms:,.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ storing
def _results(lv: ProjectedLevel, go_ns: int, input_len: int, output_len: int):
    from bench.loadgen import RequestResult

    out = []
    for seq, (arrival, ttft, e2e, n, user) in enumerate(sorted(lv.records, key=lambda r: r[0])):
        out.append(RequestResult(seq=seq, warmup=False, send_ns=go_ns + int(arrival * 1e9), queue_ms=0.0,
                                 ttft_ms=ttft * 1e3, e2e_ms=e2e * 1e3, input_tokens=input_len, output_tokens=n,
                                 chunks=n, itl_mean_ms=(e2e - ttft) * 1e3 / (n - 1) if n > 1 else None,
                                 itl_max_ms=None, ok=True, status_code=200, error=None, max_tokens=output_len,
                                 user=user))
    return out


def save_projection(p: Projection, db: str | Path | None = None) -> dict[str, int]:
    """Store each target's projection as a finished simulated run; returns {target GPU: new run id}."""
    from bench.config import RunConfig
    from bench.hist import LogHistogram
    from bench.loadgen import LevelOutcome
    from bench.metrics import summarize
    from bench.runs import stored_config
    from bench.steady import steady_summary
    from bench.sweep import base_versions
    from storage.db import open_db
    from storage.models import LevelStatus, Run, RunStatus
    from storage.recorder import Recorder

    factory = open_db(db)
    with factory() as s:
        src_run = s.get(Run, p.source.run_id)
        if src_run is None:
            raise ProjectionError(f"run #{p.source.run_id} not found")
        tags = [t for t in (src_run.tags or []) if t != "projected"] + ["projected"]
        price = src_run.price_per_gpu_hour
    src_cfg = p.source.config or config_of(src_run)
    made = {}
    for gpu, levels in p.targets.items():
        # the measured run's config, its engine swapped for the sim on the target GPU with the fitted host's base
        # profile (the fitted constants themselves are in `projection`: a re-run of this config is a plain sim run
        # of the same engine settings); the source GPU's price only where the GPU is the same
        mbt = [f"--max-num-batched-tokens={p.source.knobs.max_num_batched_tokens}"] if p.source.knobs else []
        eng = {**(src_cfg.get("engine") or {}), "kind": "sim", "sim_gpu": gpu, "sim_host_profile": p.host_profile,
               "engine_cmd": None, "extra_args": mbt, "port": None, "base_url": None, "dummy_weights": False}
        name = f"{p.source.name or f'run #{p.source.run_id}'} projected to {gpu}"[:200]
        cfg = RunConfig.model_validate({**src_cfg, "engine": eng, "gpu": gpu, "name": name,
                                        "price_per_gpu_hour": src_cfg.get("price_per_gpu_hour")
                                        if gpu == p.source.gpu else None})
        doc, slo = stored_config(cfg), cfg.workload.slo
        proj = {**p.summary(), "to_gpu": gpu, "expected": expected_lines(p, gpu)}
        rid = Recorder.create_run(factory, config=doc, name=name, engine_kind="sim",
                                  model=src_run.model, gpu=gpu, gpu_count=1, simulated=True, tags=tags,
                                  price_per_gpu_hour=None if gpu != p.source.gpu else price,
                                  versions={**base_versions(), "projection": "bench.project"}, host={})
        rec = Recorder(rid, factory=factory)
        rec.update_run(projection=proj, notes="\n".join(proj["expected"]))
        rec.set_status(RunStatus.starting)
        go = time.time_ns()
        for idx, lv in enumerate(levels):
            results = _results(lv, go, p.source.input_len, p.source.output_len)
            end = max(r.send_ns + int(r.e2e_ms * 1e6) for r in results)
            dur = lv.requests * p.source.output_len / lv.output_tok_s
            outcome = LevelOutcome(results_ok=len(results), results_err=0, n_sent=len(results), start_ns=go,
                                   end_ns=end, duration_s=dur, itl=LogHistogram(), client_cpu_pct=None,
                                   client_bound=False, cancelled=False, concurrency=lv.concurrency, ramp_s=lv.ramp_s)
            summary = summarize(results, outcome, slo)      # goodput under the measured run's own SLO
            summary["steady"] = steady_summary(results, go, None, users=lv.concurrency, open_loop=False)
            summary.update(repeat=0, ramp_s=lv.ramp_s, projected=True)
            level_id = rec.start_level(idx, lv.concurrency, lv.requests, None)
            rec.update_level(level_id, start_ns=go, end_ns=end)
            rec.insert_requests(level_id, results)
            rec.finish_level(level_id, LevelStatus.completed, summary)
            go = end + 1_000_000_000
        rec.set_status(RunStatus.completed)
        made[gpu] = rid
    return made
