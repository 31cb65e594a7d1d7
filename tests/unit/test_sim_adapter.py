"""engines/sim/adapter.py: EngineSpec -> LaunchPlan, pure."""
import sys
from pathlib import Path

import pytest

from catalog import CatalogError
from engines.sim.adapter import REPO_ROOT, build_plan
from engines.spec import EngineSpec


def test_plan_argv_and_labels(tmp_path):
    spec = EngineSpec(kind="sim", model="Qwen/Qwen3-0.6B", sim_gpu="H100-SXM-80GB", max_seqs=64, mem_fraction=0.8,
                      max_model_len=4096, kv_cache_dtype="fp8", served_model_name="qwen", extra_args=["--log-level",
                                                                                                       "warning"])
    plan = build_plan(spec, "127.0.0.1", 8123, tmp_path)
    assert plan.argv[:3] == [sys.executable, "-m", "engines.sim"]
    a = plan.argv
    assert a[a.index("--gpu") + 1] == "H100-SXM-80GB" and a[a.index("--model") + 1] == "Qwen/Qwen3-0.6B"
    assert a[a.index("--port") + 1] == "8123" and a[a.index("--host") + 1] == "127.0.0.1"
    assert a[a.index("--max-num-seqs") + 1] == "64" and a[a.index("--mem-fraction") + 1] == "0.8"
    assert a[a.index("--max-model-len") + 1] == "4096" and a[a.index("--kv-cache-dtype") + 1] == "fp8"
    assert a[a.index("--served-model-name") + 1] == "qwen" and a[-2:] == ["--log-level", "warning"]
    assert all(isinstance(x, str) for x in a)
    assert plan.simulated and plan.health_path == "/health" and plan.served_model_name == "qwen"
    assert plan.base_url == "http://127.0.0.1:8123"
    assert plan.cwd == REPO_ROOT and (Path(plan.cwd) / "engines" / "sim" / "__main__.py").exists()
    assert list(tmp_path.iterdir()) == []  # pure: wrote nothing


def test_catalog_ids_are_normalised_and_checked(tmp_path):
    plan = build_plan(EngineSpec(kind="sim", model="qwen/qwen3-0.6b", sim_gpu="h100-sxm-80gb"), "127.0.0.1", 1,
                      tmp_path)
    assert "H100-SXM-80GB" in plan.argv and "Qwen/Qwen3-0.6B" in plan.argv
    with pytest.raises(CatalogError, match="H100-SXM-80GB"):
        build_plan(EngineSpec(kind="sim", model="Qwen/Qwen3-0.6B", sim_gpu="H100-SXM"), "127.0.0.1", 1, tmp_path)


@pytest.mark.parametrize("kwargs, match", [
    ({"sim_gpu": None}, "sim_gpu"),
    ({"dp": 2}, "dp must be 1"),
    ({"tp": 2, "gpus": [0]}, "models 2 GPU"),
    ({"kind": "vllm"}, "kind"),
])
def test_bad_specs(tmp_path, kwargs, match):
    base = {"kind": "sim", "model": "Qwen/Qwen3-0.6B", "sim_gpu": "H100-SXM-80GB", **kwargs}
    with pytest.raises(ValueError, match=match):
        build_plan(EngineSpec(**base), "127.0.0.1", 1, tmp_path)


def test_plan_passes_the_host_profile(tmp_path):
    spec = EngineSpec(kind="sim", model="Qwen/Qwen3-0.6B", sim_gpu="H100-SXM-80GB",
                      sim_host_profile="h200-host-b-2026-12-01")
    a = build_plan(spec, "127.0.0.1", 8123, tmp_path).argv
    assert a[a.index("--host-profile") + 1] == "h200-host-b-2026-12-01"
    plain = build_plan(EngineSpec(kind="sim", model="Qwen/Qwen3-0.6B", sim_gpu="H100-SXM-80GB"), "127.0.0.1", 1,
                       tmp_path)
    assert "--host-profile" not in plain.argv
