"""Real llama.cpp (llama-cpp-python's server, built from source on this CPU) serving a dummy GGUF Melt wrote, driven
by Melt's own adapter + supervisor and by whole CLI sweeps: tokenization agrees with Melt's prompts, a sweep's token
counts are exact, and the failure cases end readably with nothing left running: binary missing, exit during load
(a corrupt GGUF) with the log tail, readiness timeout, killed mid-level.

Needs the llama-cpp venv: MELT_LLAMACPP_PY, else Melt's own (python -m bench engines install llama-cpp).
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from engines.registry import build_plan
from engines.spec import EngineSpec
from engines.supervisor import EngineProcess, EngineStartError, free_port
from tests.integration.test_sweep_cli import ROOT, _alive, _end_sweep, melt
from tests.unit.test_argv_llamacpp import llamacpp_python

pytestmark = [pytest.mark.slow]
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy


@pytest.fixture(scope="module")
def lpy() -> str:
    py = llamacpp_python()
    if py is None:
        pytest.skip("no llama-cpp venv (python -m bench engines install llama-cpp, or set MELT_LLAMACPP_PY)")
    return py


def cmd(py: str) -> list[str]:
    return [py, "-m", "llama_cpp.server"]


def post(url: str, body: dict, timeout: float = 120) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with _OPENER.open(req, timeout=timeout) as r:
        return json.loads(r.read())


def group_pids(sid: int) -> list[int]:
    out = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (psutil.Error, OSError):
            pass
    return out


def llama_servers_under(path: Path) -> list[int]:
    """llama_cpp.server processes serving a file under `path` (what a test of ours launched)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        c = " ".join(p.info.get("cmdline") or [])
        if "llama_cpp.server" in c and str(path) in c:
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p.pid)
            except psutil.Error:
                pass
    return out


def test_server_tokenizes_melts_prompts_as_melt_does(lpy, tmp_path):
    """The GGUF carries Melt's BPE: text prompts Melt makes to exact lengths are that long by the server's own count
    (its tokenize endpoint and a non-streamed usage), so the sweep's prompt counts are the server's."""
    from bench.config import LengthRange
    from bench.prompts import PromptMaker

    spec = EngineSpec(kind="llamacpp", model="melt/tiny-qwen3", dummy_weights=True, max_model_len=2048,
                      engine_cmd=cmd(lpy))
    plan = build_plan(spec, "127.0.0.1", free_port(), tmp_path / "work")
    events: list[tuple[str, str]] = []
    eng = EngineProcess(plan, tmp_path / "llama.log", on_event=lambda k, m: events.append((k, m)))
    try:
        eng.start()
        startup = eng.wait_ready(timeout_s=300)
        phases = [m for k, m in events if k == "phase"]
        assert phases[0] == "launching" and "loading weights" in phases and phases[-1] == "ready", phases
        tok = str(tmp_path / "work" / "dummy-model" / "tokenizer.json")
        maker = PromptMaker(prompt_format="text", input_len=LengthRange(min=20, max=200),
                            output_len=LengthRange(min=4, max=4), seed=3, vocab_size=32000, tokenizer_path=tok)
        for seq in range(6):
            prompt, _ = maker.request(seq)
            want = maker.last_in_tokens
            assert want is not None and 20 <= want <= 200
            assert post(f"{eng.base_url}/extras/tokenize/count", {"input": prompt})["count"] == want
            usage = post(f"{eng.base_url}/v1/completions", {"model": plan.served_model_name, "prompt": prompt,
                                                             "max_tokens": 4, "min_tokens": 4})["usage"]
            assert usage == {"prompt_tokens": want, "completion_tokens": 4, "total_tokens": want + 4}
        tree = set(group_pids(eng.pid))
        print(f"\n[llama.cpp] startup {startup:.1f} s")
    finally:
        report = eng.stop(grace_s=20)
    assert report["leftover_pids"] == [] and report["exit_code"] is not None
    assert not [p for p in tree if _alive(p)] and group_pids(eng.pid) == []


def test_real_llamacpp_sweep_through_melt(lpy, tmp_path):
    """A whole CLI sweep (adapter, supervisor, load generator, storage) against real llama.cpp on this CPU: every
    request completes with exact token counts, the levels say where the counts come from, nothing is left."""
    db = tmp_path / "melt.db"
    r = melt("sweep", "--engine", "llamacpp", "--model", "melt/tiny-qwen3", "--dummy-weights", "--max-model-len",
             "2048", "--engine-cmd", " ".join(cmd(lpy)), "--levels", "1,4", "--requests", "8", "--input-len", "64",
             "--output-len", "16", "--telemetry-hz", "0", "--json", db=db, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["status"] == "completed" and doc["simulated"] is False
    assert doc["versions"]["engine"] == "0.3.36"
    assert "streams carry no usage" in r.stderr
    events = [m for (m,) in sqlite3.connect(db).execute("select message from events where kind = 'info'")]
    assert any("has no /metrics endpoint" in m for m in events) and any("carry no usage" in m for m in events)
    for lv in doc["levels"]:
        assert lv["status"] == "completed" and lv["n_ok"] == 8 and lv["n_err"] == 0, lv
        assert lv["usage_source"] == "finish-length"
        assert lv["output_tok_s"] > 0 and lv["ttft_ms"]["p50"] > 0
    rows = sqlite3.connect(db).execute("select input_tokens, output_tokens, chunks, error from requests "
                                       "where not warmup").fetchall()
    assert len(rows) == 16 and all(row == (64, 16, row[2], None) for row in rows), rows[:3]
    assert all(row[2] >= 16 for row in rows)  # one content event per token, plus the finish event
    inst = doc["engine_instances"][0]
    assert "--interrupt_requests" in inst["argv"] and inst["exit_code"] is not None
    assert llama_servers_under(Path(os.environ["MELT_HOME"])) == []
    print(f"\n[llama.cpp] sweep: " + ", ".join(f"c={lv['concurrency']} {lv['output_tok_s']:.0f} tok/s "
                                                 f"TTFT p50 {lv['ttft_ms']['p50']:.0f} ms"
                                                 for lv in doc["levels"]))


# --------------------------------------------------------------------------------------------- failure cases

def test_binary_missing_fails_before_launch_readably(tmp_path):
    db = tmp_path / "melt.db"
    r = melt("sweep", "--engine", "llamacpp", "--model", "melt/tiny-qwen3", "--dummy-weights",
             "--engine-cmd", "/nonexistent/llama/bin/python -m llama_cpp.server", "--levels", "1", "--requests", "1",
             "--telemetry-hz", "0", "--json", db=db, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    doc = json.loads(r.stdout)
    assert doc["status"] == "failed" and "/nonexistent/llama/bin/python" in doc["error"]
    assert doc["levels"] == []


def test_corrupt_gguf_exits_during_load_with_the_log_tail(lpy, tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(4096))  # the magic, then garbage
    spec = EngineSpec(kind="llamacpp", model=str(bad), engine_cmd=cmd(lpy))
    plan = build_plan(spec, "127.0.0.1", free_port(), tmp_path / "work")
    eng = EngineProcess(plan, tmp_path / "llama.log")
    eng.start()
    with pytest.raises(EngineStartError) as ei:
        eng.wait_ready(timeout_s=300)
    assert "exit code" in str(ei.value) and str(bad) in ei.value.log_tail
    assert "gguf" in ei.value.log_tail.lower() or "failed to load" in ei.value.log_tail.lower()
    assert eng.stop()["leftover_pids"] == [] and group_pids(eng.pid) == []


def test_readiness_timeout_stops_the_engine(lpy, tmp_path):
    spec = EngineSpec(kind="llamacpp", model="melt/tiny-qwen3", dummy_weights=True, engine_cmd=cmd(lpy))
    plan = build_plan(spec, "127.0.0.1", free_port(), tmp_path / "work")
    eng = EngineProcess(plan, tmp_path / "llama.log")
    eng.start()
    with pytest.raises(EngineStartError, match="did not become ready within 0.5 s"):
        eng.wait_ready(timeout_s=0.5)  # the server needs seconds to import and load: this cannot be met
    report = eng.stop()
    assert report["leftover_pids"] == [] and group_pids(eng.pid) == []


def test_engine_killed_mid_level_fails_the_level_and_leaves_nothing(lpy, tmp_path):
    from storage.db import open_db
    from storage.models import EngineInstance, Level

    db = tmp_path / "melt.db"
    open_db(db)
    p = subprocess.Popen([sys.executable, "-m", "bench", "--db", str(db), "sweep", "--engine", "llamacpp", "--model",
                          "melt/tiny-qwen3", "--dummy-weights", "--max-model-len", "2048", "--engine-cmd",
                          " ".join(cmd(lpy)), "--levels", "1,2", "--requests", "2", "--input-len", "16",
                          "--output-len", "400", "--telemetry-hz", "0", "--json"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # level 2 is in flight once its row exists and the server logged a completion beyond level 1's (the
        # readiness probe + 2): uvicorn logs a streamed request when its response starts
        deadline, engine_pid = time.time() + 300, None
        while time.time() < deadline and engine_pid is None:
            with open_db(db)() as s:
                lv = s.query(Level).filter(Level.idx == 1).first()
                inst = s.query(EngineInstance).first()
                log = Path(inst.log_path) if inst is not None and inst.log_path else None
            if lv is not None and inst.pid and log.exists() and log.read_text().count("POST /v1/completions") >= 4:
                engine_pid = inst.pid
            time.sleep(0.1)
        assert engine_pid, "the second level never reached the engine"
        time.sleep(0.5)  # mid-stream: 400 tokens take ~4 s on this CPU
        os.kill(engine_pid, signal.SIGKILL)
        out, err = p.communicate(timeout=120)
    finally:
        _end_sweep(p, db)
    assert p.returncode == 1, err[-2000:]
    doc = json.loads(out)
    first, second = doc["levels"]
    assert first["status"] == "completed" and second["status"] == "failed"
    assert "killed by signal 9 during level 2" in second["error"] and doc["status"] == "failed"
    assert second["n_sent"] == second["n_ok"] + second["n_err"] and second["n_err"] >= 1, second
    assert not _alive(engine_pid) and llama_servers_under(Path(os.environ["MELT_HOME"])) == []
