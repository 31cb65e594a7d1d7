from __future__ import annotations

import difflib
from functools import lru_cache
from pathlib import Path

import yaml

from catalog.models import CatalogError, GPUSpec, ModelSpec

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"


def _load_list(path: Path, model: type) -> dict:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise CatalogError(f"catalog file missing: {path}") from e
    items = raw.get("items") if isinstance(raw, dict) else None
    if not isinstance(items, list):
        raise CatalogError(f"{path}: expected a mapping with an 'items' list")
    out: dict = {}
    for i, item in enumerate(items):
        try:
            spec = model.model_validate(item)
        except Exception as e:  # pydantic.ValidationError: keep file + index in the message
            raise CatalogError(f"{path} item {i}: {e}") from e
        if spec.id in out:
            raise CatalogError(f"{path}: duplicate id {spec.id!r}")
        out[spec.id] = spec
    return out


@lru_cache(maxsize=None)
def load_gpus(path: Path | None = None) -> dict[str, GPUSpec]:
    return _load_list(path or ASSETS_DIR / "gpus.yaml", GPUSpec)


@lru_cache(maxsize=None)
def load_models(path: Path | None = None) -> dict[str, ModelSpec]:
    return _load_list(path or ASSETS_DIR / "models.yaml", ModelSpec)


def _lookup(kind: str, key: str, table: dict):
    if key in table:
        return table[key]
    folded = {k.lower(): v for k, v in table.items()}
    if key.lower() in folded:
        return folded[key.lower()]
    close = difflib.get_close_matches(key, list(table), n=3, cutoff=0.4)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise CatalogError(f"unknown {kind} {key!r}.{hint} Known: {', '.join(sorted(table))}")


def get_gpu(gpu_id: str) -> GPUSpec:
    return _lookup("GPU", gpu_id, load_gpus())


def get_model(model_id: str) -> ModelSpec:
    return _lookup("model", model_id, load_models())


def match_nvml_name(nvml_name: str | None, gpus: dict | None = None) -> str | None:
    """Catalog id for a detected GPU name via each entry's nvml_names substrings (longest match wins)."""
    if not nvml_name:
        return None
    name = nvml_name.lower()
    best, best_len = None, 0
    for gid, spec in (load_gpus() if gpus is None else gpus).items():
        for sub in getattr(spec, "nvml_names", []) or []:
            if sub and sub.lower() in name and len(sub) > best_len:
                best, best_len = gid, len(sub)
    return best
