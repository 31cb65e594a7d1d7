"""Recipes: a deployment (LLM engine instances + non-LLM services) as typed data, loaded from assets/recipes/*.yaml.

What: `Recipe` = a list of `Instance`s (one engine process serving one catalog model on a set of GPUs, or on a share
of one GPU) plus `Service`s (translate / TTS / ASR models that the planner counts by their VRAM only). `load_recipe`
reads a YAML file through these models and checks every model id against assets/models.yaml.
Why here: recipes are data like the GPU and model catalogs, and the planner (bench/plan.py), the CLI and the pages
all read them; this floor imports nothing of Melt's above it. A bad recipe fails at load with the file and the field
("recipe assets/recipes/x.yaml: instances[1].tp: Input should be greater than or equal to 1").

Conventions: GPU indices are positions on the planned box (0..count-1). `memory` is the engine-neutral memory setting
of an instance: the fraction of each of its GPUs' total memory it may use (vLLM's --gpu-memory-utilization meaning);
unset, the planner shares what the GPU has left. `model` is always a catalog id (its architecture is what the
planner sizes); `weights` names what is really served when that differs (a local path or another repo of the same
architecture, e.g. a GGUF file).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from catalog.models import CatalogError

Engine = Literal["vllm", "sglang", "trtllm", "sim"]


class RecipeError(CatalogError):
    """A recipe file that does not load; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Instance(_Strict):
    name: str = Field(min_length=1, description="unique within the recipe, e.g. gemma")
    engine: Engine = "vllm"
    model: str = Field(min_length=1, description="catalog id (assets/models.yaml): the architecture that is sized")
    weights: str | None = Field(default=None, description="local path or repo actually served, same architecture")
    gpus: list[int] | None = Field(default=None, description="GPU indices on the box; default 0..tp*dp-1")
    share: float | None = Field(default=None, gt=0, le=1,
                                description="a share of one GPU (the instance's memory = share x that GPU)")
    tp: int = Field(default=1, ge=1, description="tensor parallel size")
    dp: int = Field(default=1, ge=1, description="data parallel replicas inside this instance")
    memory: float | None = Field(default=None, gt=0, le=1,
                                 description="fraction of each GPU's total memory; None = the planner decides")
    dtype: str | None = None
    quantization: str | None = None
    kv_cache_dtype: str | None = None
    max_model_len: int | None = Field(default=None, ge=1)
    max_seqs: int | None = Field(default=None, ge=1)
    weight: float = Field(default=1.0, ge=0, description="share of the traffic (relative to the other instances)")
    # How it is launched (bench/deploy.py turns an instance into an engines.spec.EngineSpec); the planner reads only --max-num-batched-tokens from extra_args (its step size).
    engine_cmd: list[str] | None = Field(default=None, description="argv prefix that starts the engine, no shell")
    dummy_weights: bool = Field(default=False, description="serve random weights of the catalog architecture")
    extra_args: list[str] = Field(default_factory=list, description="extra engine flags, one word each")
    sim_gpu: str | None = Field(default=None, description="engine sim: the catalog GPU it emulates "
                                                         "(default: the recipe's gpu)")
    served_model_name: str | None = Field(default=None, description="name requests carry (default: the model)")

    @model_validator(mode="after")
    def _placement(self) -> "Instance":
        if self.gpus is not None:
            if len(set(self.gpus)) != len(self.gpus) or any(g < 0 for g in self.gpus):
                raise ValueError(f"gpus {self.gpus}: indices must be distinct and >= 0")
            if len(self.gpus) != self.tp * self.dp:
                raise ValueError(f"gpus {self.gpus} has {len(self.gpus)} GPU(s), tp x dp = {self.tp * self.dp}")
        if self.share is not None:
            if self.tp * self.dp != 1:
                raise ValueError("share is a share of one GPU: it needs tp = dp = 1")
            if self.memory is not None:
                raise ValueError("give share or memory, not both (share is the memory fraction of its GPU)")
        return self

    @property
    def gpu_list(self) -> list[int]:
        return list(self.gpus) if self.gpus is not None else list(range(self.tp * self.dp))

    @property
    def memory_fraction(self) -> float | None:
        """The fraction of each GPU this instance is given in the recipe (share or memory), None = planner's."""
        return self.share if self.share is not None else self.memory


class ServiceRequest(_Strict):
    """What a started service is sent during each LLM level (bench/service_load.py): one JSON request, at a steady
    Poisson rate, beside the LLM traffic. Data only: the body is sent as given, never interpreted."""

    path: str = Field(pattern=r"^/", description="e.g. /translate")
    method: Literal["POST", "GET"] = "POST"
    body: dict | None = Field(default=None, description="JSON object sent as the request body (POST)")
    rate: float = Field(gt=0, le=10_000, description="requests per second during each level")
    timeout_s: float = Field(default=60.0, gt=0, description="a request still unanswered then is an error")
    max_in_flight: int = Field(default=256, ge=1, le=10_000, description=(
        "requests open at once; an arrival beyond it is counted as an error (the service is not keeping up), "
        "never queued in the client"))

    @model_validator(mode="after")
    def _body_is_json(self) -> "ServiceRequest":
        if self.body is not None and self.method == "GET":
            raise ValueError("body: a GET request sends no body (use method POST)")
        if self.body is not None:
            import json

            try:
                json.dumps(self.body, allow_nan=False)
            except (TypeError, ValueError) as e:
                raise ValueError(f"body: not JSON ({e}); quote dates and other YAML-typed values") from None
        return self


class Service(_Strict):
    name: str = Field(min_length=1)
    kind: Literal["translate", "tts", "asr", "other"]
    model: str = Field(min_length=1, description="what runs (Hugging Face id or path); not sized, only counted")
    vram_gb: float = Field(gt=0, description="GPU memory it holds, GB (10^9 bytes), from its own documentation")
    gpu: int = Field(default=0, ge=0, description="GPU index it runs on")
    source: str | None = Field(default=None, description="where the VRAM figure comes from")
    command: list[str] | None = Field(default=None, min_length=1, description=(
        "argv that starts it (never a shell string; {port} and {host} are filled in): Melt launches it before the "
        "LLM instances, waits for health_path, stops it at the end. None = counted by the planner only"))
    health_path: str = Field(default="/health", pattern=r"^/", description="GET it until it answers 200")
    startup_timeout_s: float = Field(default=600.0, gt=0)
    request: ServiceRequest | None = Field(default=None, description=(
        "traffic for it during each LLM level; None = started and health-checked only"))

    @model_validator(mode="after")
    def _traffic_needs_a_server(self) -> "Service":
        if self.request is not None and not self.command:
            raise ValueError(f"service {self.name}: request needs a command (Melt sends traffic only to a service "
                             "it starts)")
        return self


class Recipe(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    gpu: str | None = Field(default=None, description="catalog GPU id the recipe was written for (a default)")
    count: int | None = Field(default=None, ge=1, description="GPUs the recipe was written for (a default)")
    instances: list[Instance] = Field(min_length=1)
    services: list[Service] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> "Recipe":
        names = [i.name for i in self.instances] + [s.name for s in self.services]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"names must be unique across instances and services: {', '.join(dup)} repeated")
        return self

    def gpus_used(self) -> int:
        """GPUs the recipe places something on (highest index + 1)."""
        idx = [g for i in self.instances for g in i.gpu_list] + [s.gpu for s in self.services]
        return max(idx) + 1


RECIPES_DIR = Path(__file__).resolve().parent.parent / "assets" / "recipes"


def _field(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse_recipe(raw: object, where: str = "recipe") -> Recipe:
    """Validate a mapping (YAML / JSON / a form) into a Recipe, model ids checked against the catalog."""
    from catalog.loader import get_model  # the loader imports models only; recipes sit beside it

    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: expected a mapping with 'name' and 'instances'")
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as e:
        lines = [f"{_field(err['loc'])}: {err['msg']}" for err in e.errors()]
        raise RecipeError(f"{where}: " + "; ".join(lines)) from None
    for i, inst in enumerate(recipe.instances):
        try:
            get_model(inst.model)
        except CatalogError as e:
            raise RecipeError(f"{where}: instances[{i}].model: {e}") from None
    return recipe


def load_recipe(path: str | Path) -> Recipe:
    """A recipe file by path, or by name under assets/recipes/ ("dwani" -> assets/recipes/dwani.yaml)."""
    p = Path(path)
    if not p.exists() and p.suffix not in (".yaml", ".yml") and (RECIPES_DIR / f"{p}.yaml").exists():
        p = RECIPES_DIR / f"{p}.yaml"
    try:
        raw = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        known = ", ".join(list_recipes())
        raise RecipeError(f"recipe {path}: no such file (bundled recipes: {known})") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"recipe {p}: not valid YAML: {e}") from None
    return parse_recipe(raw, f"recipe {p}")


def list_recipes() -> list[str]:
    """Names of the bundled recipes (assets/recipes/*.yaml without the suffix)."""
    return sorted(f.stem for f in RECIPES_DIR.glob("*.yaml"))
