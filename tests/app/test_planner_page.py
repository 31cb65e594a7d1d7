"""The Planner page through AppTest: the verdict, one bar per GPU and the instance table come from bench.plan."""
import json
import re

from tests.app.test_pages import app, charts, ok, texts


def plain(md: str) -> str:
    """Undo esc_md's backslashes (every punctuation mark is escaped on the page)."""
    return re.sub(r"\\(.)", r"\1", md)


def test_planner_dwani_on_h100_then_h200(app_db):
    at = ok(app("planner"))
    assert at.selectbox(key="p_recipe").value == "dwani"
    assert at.selectbox(key="p_gpu").value == "H100-SXM-80GB"            # the recipe's own GPU
    assert plain(at.error[0].value).startswith("DOES NOT FIT: dwani on 1x H100-SXM-80GB (85.5 GB each")
    assert "offload the small services to CPU" in plain(texts(at))
    assert len(charts(at)) == 1
    at.selectbox(key="p_gpu").select("H200-141GB").run()
    ok(at)
    assert plain(at.success[0].value).startswith("FITS: dwani on 1x H200-141GB")
    inst = at.dataframe[0].value
    assert list(inst["instance"]) == ["gemma", "qwen3"]
    assert list(inst["KV tokens"]) == [52_312, 265_558]                  # tests/unit/test_plan.py's hand figures
    assert "What to change" not in texts(at)


def test_planner_8xh200_layout_and_memory_override(app_db):
    at = ok(app("planner"))
    at.selectbox(key="p_recipe").select("h200x8-hybrid").run()
    ok(at)
    assert at.selectbox(key="p_gpu").value == "H200-141GB" and at.number_input(key="p_count").value == 8
    spec = json.loads(charts(at)[0].proto.spec)
    assert [t["y"][0] for t in spec["data"] if t["y"][0]].count("GPU 7") == 3 * 1 + 5 + 1   # 1 LLM, 5 services, free
    assert at.success[0].value.startswith("FITS")
    at.number_input(key="p_mem").set_value(40.0).run()                   # a 40 GB card cannot hold 70B/4 + KV
    ok(at)
    assert at.error[0].value.startswith("DOES NOT FIT")


def test_planner_uses_the_detected_gpus_memory(app_db, monkeypatch):
    import app.ui.common as common

    gpus = [{"index": 0, "uuid": "GPU-0", "name": "NVIDIA H100 80GB HBM3", "memory_total_mb": 80_000.0,
             "driver": "580.1", "cuda": "13.0", "mig_devices": []}]                # a made-up total, to see it used
    monkeypatch.setattr(common, "detected_gpus", lambda: (gpus, "NVML ok"))
    at = ok(app("planner"))
    assert "80,000 MiB = 83.9 GB (NVML)" in plain(texts(at))
    assert "(83.9 GB each, detected: NVML total 80,000 MiB)" in plain(at.error[0].value)
    at.selectbox(key="p_gpu").select("H200-141GB").run()                         # not the detected kind
    assert "NVML total 143,771 MiB" in plain(ok(at).success[0].value)
