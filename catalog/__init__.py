"""Typed loader for assets/ (GPU and model catalogs, recipes).

Bottom floor: imports nothing of Melt's, so every layer may use it. YAML under assets/ is loaded only
through these pydantic models (extra="forbid"), so a typo in the catalog fails loudly at load time.
"""
from catalog.models import GPUSpec, ModelSpec, CatalogError
from catalog.loader import load_gpus, load_models, get_gpu, get_model, ASSETS_DIR

__all__ = ["GPUSpec", "ModelSpec", "CatalogError", "load_gpus", "load_models", "get_gpu", "get_model", "ASSETS_DIR"]
