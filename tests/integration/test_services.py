"""A deployment's non-LLM services (a recipe's `services` with a `command`, engine kind custom): started by
`./melt sweep --recipe` before the LLM instance, health-checked, recorded as instances with no traffic and stopped
after it; a service that cannot start fails the run before any LLM starts and leaves nothing running. The service
here is a real HTTP server on loopback (python -m http.server: GET / answers 200)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml

from engines.supervisor import tagged
from storage.db import open_db
from storage.models import EngineInstance, Request

ROOT = Path(__file__).resolve().parents[2]
SIM = {"name": "llm", "engine": "sim", "model": "Qwen/Qwen3-0.6B", "sim_gpu": "H100-SXM-80GB"}


def _service(name: str, command: list[str], **kw) -> dict:
    return {"name": name, "kind": "tts", "model": "ai4bharat/IndicF5", "vram_gb": 1.4, "command": command, **kw}


def _sweep(tmp_path: Path, db: Path, recipe: dict) -> tuple[subprocess.CompletedProcess, dict | None]:
    f = tmp_path / "svc.yaml"
    f.write_text(yaml.safe_dump(recipe))
    r = subprocess.run([sys.executable, "-m", "bench", "--db", str(db), "sweep", "--recipe", str(f), "--levels", "2",
                        "--requests", "6", "--input-len", "16", "--output-len", "4", "--telemetry-hz", "0", "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    try:
        return r, json.loads(r.stdout)
    except json.JSONDecodeError:
        return r, None


def _rows(db: Path):
    with open_db(db)() as s:
        return (s.query(EngineInstance).order_by(EngineInstance.id).all(),
                s.query(Request).count(), {x.instance_id for x in s.query(Request).all()})


def _nothing_left(instances) -> None:
    for i in instances:
        if i.pid:
            assert not psutil.pid_exists(i.pid) or psutil.Process(i.pid).status() == psutil.STATUS_ZOMBIE, i.name
        if i.proc_tag:
            assert tagged(i.proc_tag) == [], f"{i.name}: processes of tag {i.proc_tag} still running"


def test_a_service_starts_first_gets_no_traffic_and_is_stopped(tmp_path, db_path):
    http = [sys.executable, "-m", "http.server", "{port}", "--bind", "{host}"]
    recipe = {"name": "svc", "gpu": "H100-SXM-80GB", "instances": [SIM],
              "services": [_service("tts", http, health_path="/")]}
    r, doc = _sweep(tmp_path, db_path, recipe)
    assert r.returncode == 0, r.stderr[-3000:]
    assert doc["status"] == "completed"
    assert "service 1/1: tts" in r.stderr
    instances, n_requests, served_by = _rows(db_path)
    svc, llm = instances                                     # the service's row first: it started first
    assert (svc.kind, svc.name, svc.weight, svc.state) == ("custom", "tts", 0.0, "stopped")
    assert svc.argv[-3:] == [str(svc.base_url.rsplit(":", 1)[1]), "--bind", "127.0.0.1"]   # {port} / {host} filled
    assert svc.ready_at is not None and svc.ready_at <= llm.launched_at
    assert llm.kind == "sim" and llm.state == "stopped"
    assert n_requests > 0 and served_by == {llm.id}          # every request went to the LLM
    _nothing_left(instances)


def test_a_service_that_fails_stops_the_run_before_any_llm(tmp_path, db_path):
    ok = [sys.executable, "-m", "http.server", "{port}", "--bind", "{host}"]
    bad = [sys.executable, "-c", "import sys; print('no model here', flush=True); sys.exit(3)", "{port}"]
    recipe = {"name": "svc-bad", "gpu": "H100-SXM-80GB", "instances": [SIM],
              "services": [_service("tts", ok, health_path="/"), _service("asr", bad)]}
    r, doc = _sweep(tmp_path, db_path, recipe)
    assert r.returncode != 0
    assert doc is not None and doc["status"] == "failed"
    assert "service asr did not start: engine exited during startup with exit code 3" in doc["error"]
    instances, n_requests, _ = _rows(db_path)
    assert [i.name for i in instances] == ["tts", "asr"]     # the LLM was never launched
    assert instances[0].state == "stopped" and instances[1].state == "failed"
    assert "no model here" in (instances[1].log_tail or "")
    assert n_requests == 0
    _nothing_left(instances)


def test_bad_service_commands_are_clear_errors(tmp_path, db_path):
    recipe = {"name": "svc-x", "gpu": "H100-SXM-80GB", "instances": [SIM],
              "services": [_service("tts", [sys.executable, "-m", "http.server", "{prot}"], health_path="/")]}
    r, doc = _sweep(tmp_path, db_path, recipe)
    assert r.returncode != 0 and doc is not None
    assert "its command must take {port}" in doc["error"]
    f = tmp_path / "shell.yaml"
    f.write_text(yaml.safe_dump({**recipe, "services": [_service("tts", "python -m http.server")]}))
    r = subprocess.run([sys.executable, "-m", "bench", "--db", str(db_path), "sweep", "--recipe", str(f),
                        "--levels", "1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "services" in r.stderr and "command" in r.stderr


SHORT_LIVED = """
import os, sys, threading
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
        threading.Timer(1.0, lambda: os._exit(0)).start()
    def log_message(self, *a):
        pass
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_a_service_that_dies_mid_run_is_reported(tmp_path, db_path):
    recipe = {"name": "svc-dies", "gpu": "H100-SXM-80GB", "instances": [SIM],
              "services": [_service("tts", [sys.executable, "-c", SHORT_LIVED, "{port}"])]}
    r, doc = _sweep(tmp_path, db_path, recipe)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "warning: service tts had exited before the run ended" in r.stderr
    instances, _, _ = _rows(db_path)
    assert instances[0].name == "tts" and instances[0].exit_code == 0
    _nothing_left(instances)


ECHO_SERVICE = """
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
log = open(sys.argv[2], "a", buffering=1)
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def _send(self, code, body):
        self.send_response(code); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self._send(200 if self.path == "/health" else 404, b"ok")
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/translate":
            return self._send(404, b"no such path")
        log.write(body.decode() + "\\n")
        self._send(200, json.dumps({"text": "translated"}).encode())
    def log_message(self, *a):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_services_get_their_own_traffic_during_each_level(tmp_path, db_path):
    seen = tmp_path / "bodies.jsonl"
    cmd = [sys.executable, "-c", ECHO_SERVICE, "{port}", str(seen)]
    body = {"text": "नमस्ते <b>&amp;</b>", "src": "hin_Deva", "tgt": "eng_Latn"}
    recipe = {"name": "svc-load", "gpu": "H100-SXM-80GB", "instances": [SIM], "services": [
        _service("indic-en", cmd, request={"path": "/translate", "body": body, "rate": 25}),
        {**_service("asr", cmd, request={"path": "/nope", "rate": 10}), "kind": "asr"}]}
    f = tmp_path / "svc.yaml"
    f.write_text(yaml.safe_dump(recipe, allow_unicode=True))
    r = subprocess.run([sys.executable, "-m", "bench", "--db", str(db_path), "sweep", "--recipe", str(f),
                        "--levels", "2,4", "--duration", "2", "--input-len", "16", "--output-len", "4",
                        "--telemetry-hz", "0", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["status"] == "completed"
    total_ok = 0
    for lvl in doc["levels"]:
        tr, asr = lvl["services"]
        assert tr["name"] == "indic-en" and asr["name"] == "asr"
        # Poisson at 25 req/s over the window it ran (the whole load-generator call: shard start-up, the 2 s
        # measured phase, the drain), every one answered
        assert 0.5 * 25 * tr["window_s"] <= tr["sent"] <= 1.5 * 25 * tr["window_s"] + 5, tr
        assert tr["window_s"] >= 2.0
        assert tr["ok"] == tr["sent"] and tr["err"] == 0, tr
        assert tr["latency_ms"]["n"] == tr["ok"] and 0 < tr["latency_ms"]["p50"] <= tr["latency_ms"]["p99"]
        assert 0.8 * tr["ok"] / tr["window_s"] <= tr["req_s"] <= tr["ok"] / tr["window_s"]   # answers in the window
        # a wrong path: every request counted as an error with the server's answer, none dropped
        assert asr["sent"] > 0 and asr["ok"] == 0 and asr["err"] == asr["sent"], asr
        assert list(asr["errors"]) == ["HTTP 404: no such path"]
        assert lvl["n_err"] == 0 and lvl["output_tokens"] > 0      # the LLM level is unaffected
        total_ok += tr["ok"]
    sent = [json.loads(line) for line in seen.read_text().splitlines()]
    assert len(sent) == total_ok and all(b == body for b in sent)    # the body as given, byte for byte as JSON
    assert "level 1: service indic-en:" in r.stderr and "errors: " in r.stderr
    instances, _, served_by = _rows(db_path)
    assert [i.name for i in instances[:2]] == ["indic-en", "asr"] and instances[2].kind == "sim"
    assert served_by == {instances[2].id}                              # LLM rows: only the LLM's requests
    _nothing_left(instances)


def test_a_service_request_without_a_command_is_refused(tmp_path, db_path):
    recipe = {"name": "svc-nocmd", "gpu": "H100-SXM-80GB", "instances": [SIM],
              "services": [{"name": "tts", "kind": "tts", "model": "m", "vram_gb": 1.0,
                            "request": {"path": "/tts", "rate": 1}}]}
    f = tmp_path / "nocmd.yaml"
    f.write_text(yaml.safe_dump(recipe))
    r = subprocess.run([sys.executable, "-m", "bench", "--db", str(db_path), "sweep", "--recipe", str(f),
                        "--levels", "1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "request needs a command" in r.stderr
