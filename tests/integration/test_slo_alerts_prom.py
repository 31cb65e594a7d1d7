"""SLO search, alerts and the Prometheus exporter through the real CLI against the real sim engine on loopback, and a
remote `--engine openai` run reading GPU telemetry from a DCGM exporter page served on loopback."""
import json
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from bench.slo_search import Limit, SloSearchSpec, level_budget
from engines.supervisor import free_port
from storage.db import open_db
from storage.models import Event, TelemetrySample

ROOT = Path(__file__).resolve().parents[2]
SIM = ["--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B"]
FIXTURE = ROOT / "tests" / "fixtures" / "dcgm_exporter_h100x2.prom"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _scrape(port: int) -> dict | None:
    try:
        with NO_PROXY.open(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    out = {}
    for fam in text_string_to_metric_families(text):  # a real parser: raises on malformed exposition
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


@pytest.mark.slow
def test_slo_search_converges_on_sim_and_exporter_serves_live_numbers(db_path):
    port = free_port("127.0.0.1")
    # An 8B model on a simulated L40S with 2048-token prompts: TTFT p99 roughly doubles per doubling of users (about
    # 0.4 s at c=2, 0.9 s at c=4, 1.6 s at c=8 measured here), so a 1.2 s limit puts the knee between 4 and 8.
    args = ["slo", "--engine", "sim", "--gpu", "L40S", "--model", "meta-llama/Llama-3.1-8B-Instruct",
            "--input-len", "2048", "--output-len", "16", "--requests", "24", "--ttft-ms", "1200", "--start", "2",
            "--max", "64", "--metrics-port", str(port), "--json"]
    proc = subprocess.Popen([sys.executable, "-m", "bench", "--db", str(db_path), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    scrapes = []
    try:
        t0 = time.monotonic()
        while proc.poll() is None and time.monotonic() - t0 < 400:
            got = _scrape(port)
            if got is not None:
                scrapes.append(got)
            time.sleep(0.5)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    doc = json.loads(out)
    res = doc["slo_search"]
    spec = SloSearchSpec(limits=[Limit(metric="ttft", max_ms=1200)], start=2, max_value=64)
    # converged: bracketed within the stated budget, every probe a stored level
    assert "bracketed" in res["reason"], res
    assert res["levels"] == len(doc["levels"]) <= level_budget(spec) == 11
    assert [p["value"] for p in res["probes"]] == [float(lv["concurrency"]) for lv in doc["levels"]]
    best = next(lv for lv in doc["levels"] if lv["concurrency"] == res["best"])
    worst = next(lv for lv in doc["levels"] if lv["concurrency"] == res["lowest_failing"])
    assert best["ttft_ms"]["p99"] <= 1200 < worst["ttft_ms"]["p99"]
    assert 2 <= res["best"] < 16 and res["lowest_failing"] == res["best"] + 1  # exact integer bracket
    assert best["slo_search"]["meets"] and not worst["slo_search"]["meets"]
    # goodput there, as vllm bench serve's --goodput ttft:1200
    assert doc["config"]["workload"]["slo"]["ttft_ms"] == 1200
    assert res["goodput_req_s"] == best["goodput_req_s"] > 0
    # alerts per level are stored with it: past 200 ms the default TTFT p99 limit is critical at every probe
    for lv in doc["levels"]:
        assert ("ttft_p99_ms", "critical") in {(a["rule"], a["severity"]) for a in lv["alerts"]}
    assert doc["simulated"] is True
    # the exporter answered during the run, with live numbers of the running level and finished-level figures
    assert scrapes, "the exporter never answered"
    assert any(s.get("melt_level_running") for s in scrapes)
    last = scrapes[-1]
    assert last["melt_run_info"][0][0]["simulated"] == "true"
    finished = {lab["level"] for lab, _ in last.get("melt_level_output_tokens_per_second", [])}
    assert len(finished) >= 2
    assert any(s.get("melt_live_output_tokens_per_second") for s in scrapes)
    tok = {lab["level"]: v for lab, v in last["melt_level_output_tokens_per_second"]}
    for i, lv in enumerate(doc["levels"][:len(tok)]):
        assert abs(tok[str(i)] - lv["output_tok_s"]) < 1e-6 * lv["output_tok_s"]
    assert any(s.get("melt_slo_search_best") for s in scrapes)
    with open_db(db_path)() as s:
        kinds = {e.kind for e in s.scalars(select(Event).where(Event.run_id == doc["run_id"]))}
    assert "slo_search" in kinds


class _Dcgm(BaseHTTPRequestHandler):
    page = FIXTURE.read_bytes()
    hits = 0

    def do_GET(self):  # noqa: N802
        type(self).hits += 1
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(self.page)))
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *a):
        pass


def test_remote_openai_run_reads_gpu_telemetry_from_dcgm_exporter(db_path, tmp_path):
    from tests.integration.test_sim_server import start_sim, stop

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Dcgm)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    sim, url, outp = start_sim(tmp_path, "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B")
    try:
        assert url, f"sim did not start: {outp}"
        r = subprocess.run([sys.executable, "-m", "bench", "--db", str(db_path), "sweep", "--engine", "openai",
                            "--base-url", url, "--model", "Qwen/Qwen3-0.6B", "--levels", "4", "--requests", "40",
                            "--output-len", "32", "--input-len", "64", "--telemetry-hz", "4",
                            "--gpu-metrics-url", f"http://127.0.0.1:{httpd.server_address[1]}/metrics", "--json"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        stop(sim)
        httpd.shutdown()
        httpd.server_close()
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert _Dcgm.hits >= 2
    with open_db(db_path)() as s:
        rows = s.scalars(select(TelemetrySample).where(TelemetrySample.run_id == doc["run_id"])).all()
    assert rows and {row.gpu_index for row in rows} == {0, 1}
    g1 = next(row for row in rows if row.gpu_index == 1)
    assert not g1.simulated and g1.util_gpu == 64 and g1.mem_total_mb == 81559 and g1.sm_clock_mhz == 1755
    assert g1.extra["source"] == "dcgm"
    lv = doc["levels"][0]
    # the level's alerts come from the remote GPUs: GPU 1 at 64% util and 94% memory
    assert lv["alert_values"]["gpu_util_min_pct"] == 64 and lv["alert_values"]["gpu_mem_pct"] > 93.9
    assert {a["rule"] for a in lv["alerts"]} >= {"gpu_util_low_pct", "gpu_mem_pct"}
