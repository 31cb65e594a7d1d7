"""SimSource and MetricsScraper against real HTTP servers on loopback (aiohttp in a thread), and the callback flow
into a real SQLite file through the worker's Recorder.

The server implements the sim engine's contract: GET /sim/telemetry -> {"simulated": true, "gpus": [{TelemetrySample
keys}]} and GET /metrics in vLLM's Prometheus names. Counters move between calls, like a server under load."""
import asyncio
import json
import socket
import threading
import time

import pytest
from aiohttp import web
from sqlalchemy import select

from telemetry.engine_metrics import MetricsScraper
from telemetry.nvml import SAMPLE_KEYS
from telemetry.sampler import ROW_KEYS, SimSource, TelemetrySampler, make_source


class LoopbackServer:
    """An aiohttp app served on 127.0.0.1:<free port> from its own thread and event loop."""

    def __init__(self, app: web.Application):
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner = web.AppRunner(app)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]

    def __enter__(self):
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self):
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def sim_app(state: dict) -> web.Application:
    async def telemetry(request):
        state["calls"] += 1
        if state.get("fail"):
            return web.Response(status=500, text="boom")
        n = state["calls"]
        gpus = []
        for i in range(2):
            g = {k: None for k in SAMPLE_KEYS}
            g.update(gpu_index=i, gpu_uuid=f"SIM-GPU-{i}", util_gpu=87.5, mem_used_mb=61440.0, mem_total_mb=81559.0,
                     power_w=640.0 + i, power_avg_w=620.0, energy_j=1000.0 + 160.0 * n, temp_gpu_c=66.0,
                     temp_mem_c=70.0, sm_clock_mhz=1755.0, mem_clock_mhz=2619.0, throttle_reasons=4, pstate=0)
            g.pop("extra")
            g["sim_batch"] = 64  # a key outside the contract: kept in extra, not dropped silently
            gpus.append(g)
        return web.json_response({"simulated": True, "gpus": gpus})

    async def metrics(request):
        state["scrapes"] += 1
        k = state["scrapes"]
        if state.get("metrics_404"):
            return web.Response(status=404, text="Not Found")
        text = (
            "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
            "# TYPE vllm:num_requests_running gauge\n"
            f'vllm:num_requests_running{{engine="0",model_name="sim"}} {min(k, 64)}.0\n'
            f'vllm:num_requests_waiting{{engine="0",model_name="sim"}} {max(0, k - 64)}.0\n'
            f'vllm:kv_cache_usage_perc{{engine="0",model_name="sim"}} {min(1.0, k / 100)}\n'
            f'vllm:prompt_tokens_total{{engine="0",model_name="sim"}} {512.0 * k}\n'
            f'vllm:generation_tokens_total{{engine="0",model_name="sim"}} {128.0 * k}\n'
            f'vllm:num_preemptions_total{{engine="0",model_name="sim"}} 0.0\n'
            f'vllm:request_success_total{{engine="0",finished_reason="length",model_name="sim"}} {float(k)}\n'
            f'melt:sim_lag_seconds{{model_name="sim"}} 0.001\n'
        )
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/sim/telemetry", telemetry)
    app.router.add_get("/metrics", metrics)
    return app


@pytest.fixture
def sim_server():
    state = {"calls": 0, "scrapes": 0}
    with LoopbackServer(sim_app(state)) as srv:
        srv.state = state
        yield srv


def _wait_for(pred, limit_s=15.0):
    t0 = time.monotonic()
    while not pred() and time.monotonic() - t0 < limit_s:
        time.sleep(0.02)


def test_sim_source_reads_the_contract(sim_server):
    src, msg = make_source("sim", sim_server.url, None)
    assert isinstance(src, SimSource) and "SIMULATED" in msg
    rows = src.read()
    rows2 = src.read()  # same kept-alive connection
    src.close()
    assert [r["gpu_index"] for r in rows] == [0, 1] and set(rows[0]) == set(SAMPLE_KEYS)
    assert rows[0]["power_w"] == 640.0 and rows[1]["gpu_uuid"] == "SIM-GPU-1"
    assert rows[0]["extra"] == {"sim_batch": 64}
    assert rows2[0]["energy_j"] - rows[0]["energy_j"] == 160.0


def test_sampler_with_sim_source_labels_rows_simulated(sim_server):
    batches = []
    s = TelemetrySampler(SimSource(sim_server.url), hz=20.0, on_batch=batches.append, batch_s=0.1)
    s.start()
    _wait_for(lambda: s.samples >= 8)
    sim_server.state["fail"] = True          # the sim answers 500 for a while: counted, sampling carries on
    _wait_for(lambda: s.errors >= 3)
    sim_server.state["fail"] = False
    n = s.samples
    _wait_for(lambda: s.samples >= n + 3)
    stats = s.stop()
    rows = [r for b in batches for r in b]
    assert stats["samples"] >= 11 and stats["errors"] >= 3 and "HTTP 500" in stats["last_error"]
    assert len(rows) == stats["rows"] == 2 * stats["samples"]
    assert all(r["simulated"] is True and set(r) == set(ROW_KEYS) for r in rows)
    print(f"\nsampler with SimSource: {stats}")


def test_scraper_normalises_and_counts_failures(sim_server):
    got = []
    sc = MetricsScraper(sim_server.url, "sim", on_sample=got.append, interval_s=0.05)
    sc.start()
    _wait_for(lambda: len(got) >= 5)
    stats = sc.stop()
    assert stats["failures"] == 0 and stats["ok"] == len(got) >= 5
    assert got[-1]["generation_tokens_total"] > got[0]["generation_tokens_total"]  # counters move
    assert all(a["t_ns"] < b["t_ns"] for a, b in zip(got, got[1:]))
    assert got[0]["extra"]["sim_lag_seconds"] == 0.001 and got[0]["requests_success_total"] >= 1
    # SGLang without --enable-metrics answers 404: counted, with the fix in the message.
    sim_server.state["metrics_404"] = True
    sg = MetricsScraper(sim_server.url, "sglang")
    assert sg.scrape_once() is None and sg.failures == 1 and "--enable-metrics" in sg.last_error


def test_scraper_survives_a_dead_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    sc = MetricsScraper(f"http://127.0.0.1:{port}", "vllm", interval_s=0.02, timeout_s=0.5)
    sc.start()
    _wait_for(lambda: sc.failures >= 3)
    stats = sc.stop()
    assert stats["ok"] == 0 and stats["failures"] >= 3 and "Connection" in stats["last_error"]


def test_callbacks_write_real_sqlite_through_recorder(sim_server, db_path):
    """The worker's path: sampler/scraper callbacks -> Recorder -> SQLite; rows come back with every column."""
    from bench.config import RunConfig
    from bench.runs import create_run
    from engines.spec import EngineSpec
    from storage.db import open_db
    from storage.models import EngineMetricSample, TelemetrySample
    from storage.recorder import Recorder

    run_id = create_run(RunConfig(name="telemetry", levels=[1],
                                  engine=EngineSpec(kind="sim", model="Qwen/Qwen3-0.6B", sim_gpu="H100-SXM-80GB")),
                        db_path)
    rec = Recorder(run_id, db_path)
    s = TelemetrySampler(SimSource(sim_server.url), hz=20.0, on_batch=rec.insert_telemetry, batch_s=0.1)
    sc = MetricsScraper(sim_server.url, "sim", on_sample=lambda m: rec.insert_engine_metrics([m], None),
                        interval_s=0.05)
    s.start()
    sc.start()
    _wait_for(lambda: s.samples >= 6 and sc.ok >= 3)
    st, ms = s.stop(), sc.stop()
    assert st["callback_errors"] == 0 and ms["callback_errors"] == 0
    with open_db(db_path)() as ses:
        tel = ses.scalars(select(TelemetrySample).where(TelemetrySample.run_id == run_id)).all()
        em = ses.scalars(select(EngineMetricSample).where(EngineMetricSample.run_id == run_id)).all()
    assert len(tel) == st["rows"] and all(t.simulated for t in tel)
    assert {t.gpu_index for t in tel} == {0, 1} and tel[0].extra == {"sim_batch": 64}
    assert len(em) == ms["ok"] and em[-1].generation_tokens_total >= em[0].generation_tokens_total
    assert json.dumps(em[0].extra)  # JSON-serialisable extra


def test_against_the_real_sim_engine(tmp_path):
    """SimSource + MetricsScraper + level_telemetry against `python -m engines.sim` (the real simulator process)."""
    import importlib.util
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    if importlib.util.find_spec("engines.sim.__main__") is None:
        pytest.skip("engines.sim not available")
    from telemetry.level import level_telemetry

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "sim.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "engines.sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B",
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def ready():
            try:
                return urllib.request.urlopen(url + "/health", timeout=1).status == 200
            except OSError:
                return proc.poll() is not None
        _wait_for(ready, 60)
        assert proc.poll() is None, (tmp_path / "sim.log").read_text()
        src, _ = make_source("sim", url, None)
        rows, metrics = [], []
        s = TelemetrySampler(src, hz=10.0, on_batch=rows.extend, batch_s=0.2)
        m = MetricsScraper(url, "sim", on_sample=metrics.append, interval_s=0.2)
        s.start()
        m.start()
        t0 = time.time_ns()
        usages = []

        def req():
            body = json.dumps({"model": "Qwen/Qwen3-0.6B", "prompt": "hello " * 200, "max_tokens": 512,
                               "ignore_eos": True}).encode()
            r = urllib.request.Request(url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
            usages.append(json.loads(urllib.request.urlopen(r, timeout=60).read())["usage"])

        threads = [threading.Thread(target=req) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        t1 = time.time_ns()
        time.sleep(0.5)
        st, ms = s.stop(), m.stop()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()
    assert st["errors"] == 0 and ms["failures"] == 0 and rows and metrics
    assert all(r["simulated"] and set(r) == set(ROW_KEYS) for r in rows)
    out_tokens = sum(u["completion_tokens"] for u in usages)
    assert out_tokens == 16 * 512
    assert metrics[-1]["generation_tokens_total"] >= out_tokens  # server counters agree with usage
    lt = level_telemetry(rows, t0, t1, out_tokens, source_note="sim")
    assert lt["simulated"] is True and lt["energy_source"] == "counter" and lt["energy_j"] > 0
    assert lt["joules_per_output_token"] == pytest.approx(lt["energy_j"] / out_tokens, rel=1e-3)
    assert lt["peak_power_w"] >= lt["avg_power_w"] * 0.9
    assert lt["verdict"]["reasons"][0].startswith("SIMULATED")
