"""`./melt plan`: the table, --json, the exit status, and errors that name what is wrong."""
import json

from bench.cli import main


def test_plan_table_and_exit_status(capsys):
    assert main(["plan", "dwani", "--gpu", "H200-141GB"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("FITS: dwani on 1x H200-141GB (150.8 GB each, NVML total 143,771 MiB)")
    assert "--gpu-memory-utilization 0.322" in out and "52,312" in out
    assert main(["plan", "dwani", "--gpu", "H100-SXM-80GB"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("DOES NOT FIT") and "what to change:" in out and "8.1 GB short" in out
    assert "GPU 0: needs 85.1 GB (weights + runtime + one max-model-len sequence per LLM, plus 26.4 GB of services)" in out


def test_plan_json_memory_override_and_count(capsys):
    assert main(["plan", "dwani", "--gpu", "H200-141GB", "--memory-gb", "96", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["gpu_memory_gb"] == 96.0 and doc["memory_source"] == "as given" and doc["fits"] is True
    assert [i["kv_tokens"] for i in doc["instances"]] == [9_343, 14_911]
    assert main(["plan", "h200x8-two-70b-tp4", "--json"]) == 0          # the recipe's own 8x H200
    doc = json.loads(capsys.readouterr().out)
    assert doc["count"] == 8 and len(doc["gpus"]) == 8


def test_plan_errors(capsys, tmp_path):
    assert main(["plan", "nope"]) == 2
    assert "no such file (bundled recipes: dwani" in capsys.readouterr().err
    assert main(["plan", "dwani", "--gpu", "H300"]) == 2
    assert "unknown GPU 'H300'. Did you mean: H200-141GB?" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: r\ninstances:\n  - {name: a, model: Qwen/Qwen3-0.6B, max_model_len: -1}\n")
    assert main(["plan", str(bad)]) == 2
    assert "instances[0].max_model_len: Input should be greater than or equal to 1" in capsys.readouterr().err
