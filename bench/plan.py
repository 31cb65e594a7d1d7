"""The memory planner: will a recipe (LLM instances + services) fit on N GPUs of a kind, and with which settings?

What: `plan(recipe, gpu, count, memory_gb=None)` returns, per GPU, the bytes of each tenant (an instance's weight
shard, its runtime + activation peak and its KV cache; a service's VRAM), fit / no fit with the reason, per LLM the KV
tokens and the sequences it can hold at once at the chosen context length, what to change when it does not fit, and
the memory flag of each engine that realizes the plan. Pure arithmetic, no I/O: the CLI (`./melt plan`) and the
Planner page call it. One instance is sized by bench.memory.estimate_fit (the Launch page's estimate), not again here.

How memory is shared on a GPU:
- A GPU's capacity is what the card really has: NVML's total (catalog `memory_mib`: an H200 is 143,771 MiB =
  150.76e9 bytes), else the nominal GB, else `memory_gb` as given (a scenario: "only 96 GB"). GB = 10^9 bytes.
- Services hold their VRAM. An instance with `memory` or `share` gets that fraction of each of its GPUs. The others
  share `PLANNABLE` (90%, vLLM's default gpu_memory_utilization, which keeps 10% back) of the GPU minus all that:
  each gets what it needs for one max-model-len sequence, and what is left over is split evenly between them. A
  multi-GPU instance gets the same fraction on every GPU (an engine takes one number), the smallest of its GPUs'.
- Instances sharing a GPU start one after another (services first, then in recipe order), each ready before the
  next, so each engine's "free memory" is what the earlier ones left. The flags:
  vLLM --gpu-memory-utilization = fraction of total memory for the whole instance (weights + runtime + KV);
  SGLang --mem-fraction-static = (weights + KV) / memory free at its start (the rest of that free memory is its
  activation and CUDA-graph room: model_runner.profile_max_num_token);
  TensorRT-LLM kv_cache_config.free_gpu_memory_fraction = KV / memory free after its weights and runtime load.
- Fits when every instance's budget holds its weights, runtime and one max-model-len sequence, and each GPU's
  budgets + services are within its memory.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from bench.memory import GB, MemoryFit, batched_tokens_from_args, estimate_fit, weight_gb
from catalog.models import GPUSpec, ModelSpec
from catalog.recipes import Instance, Recipe

PLANNABLE = 0.9          # share of a GPU the planner hands out by itself (vLLM's default gpu_memory_utilization)
SMALL_SERVICE_GB = 5.0   # services at most this big are candidates for CPU offload


@dataclass(frozen=True)
class Segment:
    tenant: str   # instance or service name, "" for free memory
    part: str     # weights | runtime | KV cache | service | free
    gb: float


@dataclass
class InstancePlan:
    name: str
    engine: str
    model: str
    gpus: list[int]
    tp: int
    dp: int
    fraction: float            # of each GPU's total memory
    fit: MemoryFit             # bench.memory's per-GPU breakdown at that fraction
    context_len: int
    free_at_start_gb: float    # smallest over its GPUs
    weight: float = 1.0
    reason: str = ""

    @property
    def fits(self) -> bool:
        return self.fit.fits and not self.reason

    @property
    def kv_tokens(self) -> int:
        """KV capacity of the whole instance (all DP replicas), tokens."""
        return self.fit.kv_tokens * self.dp

    @property
    def max_concurrent(self) -> int:
        """Sequences of context_len tokens resident at once: the KV cache's limit, capped by max_seqs, x DP."""
        return min(self.fit.max_seqs, self.fit.kv_tokens // self.context_len) * self.dp

    @property
    def budget_gb(self) -> float:
        return self.fraction * self.fit.gpu_total_gb

    @property
    def need_gb(self) -> float:
        """Per GPU: weights + runtime + one max-model-len sequence of KV (the least it can start with)."""
        return self.fit.weights_gb + self.fit.overhead_gb + self.fit.max_model_len * self.fit.kv_bytes_per_token / GB

    def engine_setting(self) -> tuple[str, float]:
        """(flag, value) that gives this instance its planned memory on its engine."""
        f = self.fit
        if self.engine == "sglang":
            return "--mem-fraction-static", (self.budget_gb - f.overhead_gb) / self.free_at_start_gb
        if self.engine == "trtllm":
            after = self.free_at_start_gb - f.weights_gb - f.overhead_gb
            return "free_gpu_memory_fraction", max(0.0, f.kv_gb) / after if after > 0 else 0.0
        if self.engine == "sim":
            return "--mem-fraction", self.fraction
        return "--gpu-memory-utilization", self.fraction


@dataclass
class GpuPlan:
    index: int
    total_gb: float
    segments: list[Segment]
    fits: bool
    reason: str = ""

    @property
    def used_gb(self) -> float:
        return sum(s.gb for s in self.segments if s.part != "free")


@dataclass
class Plan:
    recipe: str
    gpu_id: str
    count: int
    total_gb: float
    memory_source: str
    instances: list[InstancePlan]
    gpus: list[GpuPlan]
    reasons: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.reasons

    def verdict(self) -> str:
        where = f"{self.count}x {self.gpu_id} ({self.total_gb:,.1f} GB each, {self.memory_source})"
        if self.fits:
            return f"FITS: {self.recipe} on {where}"
        return f"DOES NOT FIT: {self.recipe} on {where}: " + "; ".join(self.reasons)

    def as_dict(self) -> dict:
        return {
            "recipe": self.recipe, "gpu": self.gpu_id, "count": self.count, "gpu_memory_gb": self.total_gb,
            "memory_source": self.memory_source, "fits": self.fits, "verdict": self.verdict(),
            "reasons": self.reasons, "suggestions": self.suggestions,
            "instances": [{
                "name": i.name, "engine": i.engine, "model": i.model, "gpus": i.gpus, "tp": i.tp, "dp": i.dp,
                "fits": i.fits, "reason": i.reason, "fraction": i.fraction, "weights_gb": i.fit.weights_gb,
                "runtime_gb": i.fit.overhead_gb, "kv_gb": max(0.0, i.fit.kv_gb), "kv_tokens": i.kv_tokens,
                "context_len": i.context_len, "max_concurrent": i.max_concurrent, "max_seqs": i.fit.max_seqs,
                "engine_flag": i.engine_setting()[0], "engine_value": round(i.engine_setting()[1], 4),
                "weight": i.weight} for i in self.instances],
            "gpus": [{"index": g.index, "total_gb": g.total_gb, "used_gb": g.used_gb, "fits": g.fits,
                      "reason": g.reason, "segments": [s.__dict__ for s in g.segments]} for g in self.gpus],
        }


def gpu_memory_gb(gpu: GPUSpec, memory_gb: float | None = None) -> tuple[float, str]:
    """(GB per GPU, where that figure comes from)."""
    if memory_gb is not None:
        if memory_gb <= 0:
            raise ValueError(f"memory must be positive, got {memory_gb} GB")
        return float(memory_gb), "as given"
    if gpu.memory_mib:
        return gpu.memory_bytes / GB, f"NVML total {gpu.memory_mib:,} MiB"
    return gpu.memory_gb, "catalog nominal GB"


def _fit(inst: Instance, model: ModelSpec, total_gb: float, fraction: float) -> MemoryFit:
    return estimate_fit(model, total_gb, n_gpus=inst.tp * inst.dp, tp=inst.tp, dp=inst.dp,
                        mem_fraction=min(1.0, max(fraction, 1e-6)), dtype=inst.dtype, quantization=inst.quantization,
                        kv_cache_dtype=inst.kv_cache_dtype, max_model_len=inst.max_model_len, max_seqs=inst.max_seqs,
                        max_batched_tokens=batched_tokens_from_args(inst.extra_args))


def _model(models: dict[str, ModelSpec], model_id: str) -> ModelSpec:
    """The catalog entry, case-insensitively like catalog.get_model (recipes are checked against it at load)."""
    found = models.get(model_id) or {k.lower(): v for k, v in models.items()}.get(model_id.lower())
    if found is None:
        raise ValueError(f"model {model_id!r} is not in the model catalog")
    return found


def plan(recipe: Recipe, gpu: GPUSpec, models: dict[str, ModelSpec], count: int = 1, memory_gb: float | None = None,
         context_len: int | None = None, memory_label: str | None = None) -> Plan:
    """Plan `recipe` on `count` GPUs of kind `gpu`. models: catalog id -> ModelSpec (catalog.load_models()).
    memory_gb: per GPU, instead of the catalog's (a scenario, or NVML's total of a detected GPU: say so in
    memory_label)."""
    if count < 1:
        raise ValueError("count must be >= 1")
    total, source = gpu_memory_gb(gpu, memory_gb)
    source = memory_label if memory_gb is not None and memory_label else source
    reasons: list[str] = []
    outside = sorted({g for i in recipe.instances for g in i.gpu_list if g >= count}
                     | {s.gpu for s in recipe.services if s.gpu >= count})
    if outside:
        reasons.append(f"the recipe places work on GPU {', '.join(map(str, outside))} but the box has {count}"
                       f" GPU(s) (0..{count - 1})")
    on = lambda g, inst: g in (inst.gpu_list if isinstance(inst, Instance) else inst.gpus)  # noqa: E731
    services_gb = [sum(s.vram_gb for s in recipe.services if s.gpu == g) for g in range(count)]

    # 1. fractions: given ones as they are; the others get their need, then an even share of what is left
    spec = {i.name: _model(models, i.model) for i in recipe.instances}
    probe = {i.name: _fit(i, spec[i.name], total, 1.0) for i in recipe.instances}
    need = {i.name: probe[i.name].weights_gb + probe[i.name].overhead_gb
            + probe[i.name].max_model_len * probe[i.name].kv_bytes_per_token / GB for i in recipe.instances}
    fraction: dict[str, float] = {i.name: i.memory_fraction for i in recipe.instances if i.memory_fraction}
    auto = [i for i in recipe.instances if i.name not in fraction]
    auto_names = {i.name for i in auto}
    spare: dict[int, float] = {}
    for g in range(count):
        fixed = sum(fraction[i.name] * total for i in recipe.instances if i.name in fraction and on(g, i))
        mine = [i for i in auto if on(g, i)]
        left = PLANNABLE * total - services_gb[g] - fixed - sum(need[i.name] for i in mine)
        spare[g] = left / len(mine) if mine else 0.0
    for i in auto:
        extra = min(spare[g] for g in i.gpu_list if g < count) if any(g < count for g in i.gpu_list) else 0.0
        fraction[i.name] = max(0.0, need[i.name] + extra) / total  # extra < 0: short of its need, it will not fit

    # 2. each instance at its fraction; free memory at its start follows the start order
    started = list(services_gb)  # what is already on each GPU when the next instance starts
    plans: list[InstancePlan] = []
    for i in recipe.instances:
        fit = _fit(i, spec[i.name], total, fraction[i.name])
        mine = [g for g in i.gpu_list if g < count]
        free = min(total - started[g] for g in mine) if mine else 0.0
        for g in mine:
            started[g] += fraction[i.name] * total
        mml = fit.max_model_len
        ctx = min(context_len or mml, mml)
        refused = [w for w in fit.warnings if "do not divide" in w or "exceeds the model's" in w]
        reason = ""
        if refused:  # the engine would refuse to start, whatever the memory
            reason = f"{i.name}: {refused[0]}"
        elif fraction[i.name] <= 0 or fit.kv_gb <= 0:
            reason = (f"{i.name}: weights {fit.weights_gb:.1f} GB + runtime {fit.overhead_gb:.1f} GB per GPU do not "
                      f"fit in its {max(0.0, fraction[i.name]) * total:.1f} GB")
        elif not fit.fits:
            reason = f"{i.name}: KV cache holds {fit.kv_tokens:,} tokens, less than one {mml:,}-token sequence"
        elif fraction[i.name] * total > free + 1e-9:
            reason = f"{i.name}: asks {fraction[i.name] * total:.1f} GB per GPU, {free:.1f} GB free at its start"
        plans.append(InstancePlan(i.name, i.engine, i.model, i.gpu_list, i.tp, i.dp, fraction[i.name], fit, ctx,
                                  free, i.weight, reason))
    instance_reasons = [p.reason for p in plans if p.reason]

    # 3. per GPU: segments and verdict
    gpus: list[GpuPlan] = []
    for g in range(count):
        segs: list[Segment] = []
        for p in plans:
            if on(g, p):
                segs += [Segment(p.name, "weights", p.fit.weights_gb), Segment(p.name, "runtime", p.fit.overhead_gb),
                         Segment(p.name, "KV cache", max(0.0, p.fit.kv_gb))]
        segs += [Segment(s.name, "service", s.vram_gb) for s in recipe.services if s.gpu == g]
        asked = services_gb[g] + sum(max(p.budget_gb, p.fit.weights_gb + p.fit.overhead_gb)
                                     for p in plans if on(g, p))
        segs.append(Segment("", "free", max(0.0, total - asked)))
        why = ""
        demand = services_gb[g] + sum(need[p.name] if p.name in auto_names else p.budget_gb
                                      for p in plans if on(g, p))
        if any(on(g, i) for i in auto) and demand > PLANNABLE * total + 1e-9:
            why = (f"GPU {g}: needs {demand:,.1f} GB (weights + runtime + one max-model-len sequence per LLM, plus "
                   f"{services_gb[g]:,.1f} GB of services), {PLANNABLE:.0%} of {total:,.1f} GB is "
                   f"{PLANNABLE * total:,.1f} GB: {demand - PLANNABLE * total:,.1f} GB short")
        elif asked > total + 1e-9:
            why = f"GPU {g}: {asked:,.1f} GB asked of {total:,.1f} GB"
        bad = [p.name for p in plans if on(g, p) and not p.fits]
        gpus.append(GpuPlan(g, total, segs, not why and not bad, why or (
            f"{', '.join(bad)} {'does' if len(bad) == 1 else 'do'} not fit" if bad else "")))
    reasons += [gp.reason for gp in gpus if gp.reason.startswith("GPU ")] + instance_reasons
    out = Plan(recipe.name, gpu.id, count, total, source, plans, gpus, reasons)
    if reasons:
        out.suggestions = suggest(recipe, out, need, services_gb, models, gpu)
    return out


def mig_layout(tenants: dict[str, float], gpu: GPUSpec) -> tuple[list[tuple[str, str]], str]:
    """Each tenant (name -> GB it needs) on its own MIG slice of `gpu`: the smallest profile whose nominal memory, 90%
    of it planned like a whole card's, holds the tenant (fewer compute slices on a tie). Returns (assignment, why it
    does not work or ""). The check is the necessary one (memory slices <= 8, compute slices <= 7, each profile's
    instance limit); NVIDIA's placement rules can still refuse an order, so nvidia-smi mig -lgipp has the last word."""
    if not gpu.mig_profiles:
        return [], f"{gpu.id} has no MIG"
    profs = sorted(gpu.mig_profiles, key=lambda m: (m.memory_gb, m.compute_slices))
    layout, used = [], {}
    for name, gb in sorted(tenants.items(), key=lambda kv: -kv[1]):
        prof = next((m for m in profs if PLANNABLE * m.memory_gb >= gb), None)
        if prof is None:
            return [], f"{name} needs {gb:.1f} GB, more than 90% of the largest slice ({profs[-1].name})"
        layout.append((name, prof.name))
        used[prof.name] = used.get(prof.name, 0) + 1
    by = {m.name: m for m in profs}
    mem = sum(by[p].memory_slices for _, p in layout)
    comp = sum(by[p].compute_slices for _, p in layout)
    over = [f"{n} x {p} (at most {by[p].max_instances})" for p, n in used.items() if n > by[p].max_instances]
    if mem > 8 or comp > 7 or over:
        return layout, (f"needs {mem} of 8 memory slices and {comp} of 7 compute slices"
                        + (f"; {', '.join(over)}" if over else ""))
    return layout, ""


def suggest(recipe: Recipe, p: Plan, need: dict[str, float], services_gb: list[float],
            models: dict[str, ModelSpec], gpu: GPUSpec | None = None) -> list[str]:
    """What to change, per GPU that does not fit: each line says what it saves and whether that alone is enough."""
    out: list[str] = []
    given = {r.name for r in recipe.instances if r.memory_fraction}
    for g in range(p.count):
        here = [i for i in p.instances if g in i.gpus]
        if p.gpus[g].fits or not (here or services_gb[g]):
            continue
        footprint = {i.name: i.budget_gb if i.name in given else need[i.name] for i in here}
        demand = services_gb[g] + sum(footprint.values())
        deficit = demand - PLANNABLE * p.total_gb
        enough = lambda saved: "enough" if saved >= deficit else f"not enough alone: {deficit:.1f} GB short"  # noqa
        refused = [i for i in here if i.reason and ("do not divide" in i.reason or "exceeds the model's" in i.reason)]
        out += [f"GPU {g}: change {i.reason}" for i in refused]
        if deficit <= 0:
            short = [i.name for i in here if not i.fits and i not in refused]
            if short:
                out.append(f"GPU {g}: raise the memory setting of {', '.join(short)} (below what it needs: "
                           f"{', '.join(f'{need[n]:.1f} GB' for n in short)})")
            continue
        out.append(f"GPU {g}: {deficit:.1f} GB short; each of these frees:")
        for i in here:
            r = next(r for r in recipe.instances if r.name == i.name)
            if not r.quantization and (r.dtype or "auto") in ("auto", "bfloat16", "bf16", "float16", "fp16", "half"):
                saved = i.fit.weights_gb - weight_gb(_model(models, r.model), r.dtype, "fp8", i.tp)
                out.append(f"  quantize {i.name} to fp8 (quantization: fp8): -{saved:.1f} GB of weights ({enough(saved)})")
            if i.tp * 2 * i.dp <= p.count:
                saved = i.fit.weights_gb / 2
                out.append(f"  run {i.name} at TP={i.tp * 2} over {i.tp * 2 * i.dp} GPUs: weights per GPU "
                           f"{i.fit.weights_gb:.1f} -> {saved:.1f} GB ({enough(saved)})")
            out.append(f"  drop {i.name}: frees {footprint[i.name]:.1f} GB ({enough(footprint[i.name])})")
        small = [s for s in recipe.services if s.gpu == g and s.vram_gb <= SMALL_SERVICE_GB]
        if small:
            saved = sum(s.vram_gb for s in small)
            out.append(f"  offload the small services to CPU ({', '.join(s.name for s in small)}): "
                       f"-{saved:.1f} GB ({enough(saved)})")
        for s in sorted((s for s in recipe.services if s.gpu == g and s.vram_gb > SMALL_SERVICE_GB),
                        key=lambda s: -s.vram_gb):
            out.append(f"  drop or move {s.name}: frees {s.vram_gb:.1f} GB ({enough(s.vram_gb)})")
        if gpu is not None and gpu.mig_profiles:
            tenants = {i.name: footprint[i.name] for i in here}
            tenants |= {s.name: s.vram_gb for s in recipe.services if s.gpu == g}
            layout, why = mig_layout(tenants, gpu)
            if why:
                out.append(f"  MIG slices ({gpu.id} profiles, one per tenant) do not help: {why}")
            else:
                out.append(f"  MIG slices, one per tenant (isolation, not more memory): "
                           + ", ".join(f"{n} {pr}" for n, pr in layout))
        if p.count == 1:
            out.append("  use more GPUs (--count 2) and place the instances on different ones (gpus: [1])")
    return out

