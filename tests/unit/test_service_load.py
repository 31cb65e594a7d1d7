"""bench/service_load.py against a real aiohttp server on loopback: the open loop's rate, and every arrival ending in
exactly one counted outcome (ok, HTTP error, timeout, over max_in_flight, unfinished at stop)."""
from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
from aiohttp import web
from pydantic import ValidationError

import datetime

from bench.mix import service_rows
from bench.service_load import MAX_CATCH_UP_S, UNFINISHED, ServiceLoad, ServiceTarget, describe, next_due
from catalog.recipes import Service, ServiceRequest


@pytest.fixture(scope="module")
def server():
    hits: list[bytes] = []

    async def fast(req: web.Request) -> web.Response:
        hits.append(await req.read())
        return web.json_response({"ok": True})

    async def slow(req: web.Request) -> web.Response:
        await asyncio.sleep(float(req.query.get("s", "2")))
        return web.json_response({"ok": True})

    async def broken(req: web.Request) -> web.Response:
        return web.Response(status=503, text="model not loaded")

    app = web.Application()
    app.add_routes([web.post("/fast", fast), web.get("/fast", fast), web.post("/slow", slow),
                    web.post("/broken", broken)])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, shutdown_timeout=1.0)   # the 30 s handlers must not hold the teardown
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    ready.wait(10)
    yield f"http://127.0.0.1:{port}", hits
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)


def _run(targets, seconds: float, **kw) -> list[dict]:
    load = ServiceLoad(targets, **kw).start()
    time.sleep(seconds)
    return load.stop()


def test_poisson_rate_and_every_answer_counted(server):
    url, hits = server
    hits.clear()
    body = {"text": "<script>alert(1)</script> नमस्ते"}
    (s,) = _run([ServiceTarget("tr", url, ServiceRequest(path="/fast", body=body, rate=100))], 2.0)
    assert 120 <= s["sent"] <= 300, s                # 100/s for ~2 s, Poisson
    assert s["ok"] == s["sent"] == len(hits) and s["err"] == 0
    assert s["latency_ms"]["n"] == s["ok"] and s["latency_ms"]["p50"] > 0
    assert s["req_s"] <= s["ok"] / s["window_s"] and s["req_s"] > 0.9 * s["ok"] / s["window_s"]
    assert 1.9 < s["window_s"] < 3.0 and s["client_lag_max_ms"] < 1000
    assert hits[0] == b'{"text": "<script>alert(1)</script> \\u0928\\u092e\\u0938\\u094d\\u0924\\u0947"}'


def test_get_sends_no_body(server):
    url, hits = server
    hits.clear()
    (s,) = _run([ServiceTarget("g", url, ServiceRequest(path="/fast", method="GET", rate=50))], 0.5)
    assert s["ok"] == s["sent"] > 0 and set(hits) == {b""}


def test_errors_timeouts_backlog_and_unfinished_are_all_counted(server):
    url, _ = server
    out = _run([
        ServiceTarget("broken", url, ServiceRequest(path="/broken", rate=50)),
        ServiceTarget("timeout", url, ServiceRequest(path="/slow?s=2", rate=20, timeout_s=0.2)),
        ServiceTarget("behind", url, ServiceRequest(path="/slow?s=30", rate=50, max_in_flight=2)),
    ], 1.0, grace_s=0.3)
    broken, timeout, behind = out
    assert broken["err"] == broken["sent"] > 0 and list(broken["errors"]) == ["HTTP 503: model not loaded"]
    assert timeout["ok"] == 0 and timeout["err"] == timeout["sent"] > 0
    assert set(timeout["errors"]) == {"timeout after 0.2s", UNFINISHED} or set(timeout["errors"]) == {
        "timeout after 0.2s"}
    # two open for 30 s: every later arrival is "behind", and the two are unfinished at the stop
    assert behind["ok"] == 0 and behind["err"] == behind["sent"] > 2
    assert behind["errors"][UNFINISHED] == 2
    assert sum(behind["errors"].values()) == behind["sent"]
    assert "over max_in_flight (2 open)" in describe(behind)
    assert behind["latency_ms"]["p50"] is None and "latency" not in describe(behind)


def test_a_service_that_is_not_there_is_an_error_per_arrival():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]          # nothing listens here once closed
    (s,) = _run([ServiceTarget("gone", f"http://127.0.0.1:{port}", ServiceRequest(path="/x", rate=50))], 0.5)
    assert s["sent"] > 0 and s["err"] == s["sent"] and s["ok"] == 0
    assert any("ClientConnectorError" in k or "Connect" in k for k in s["errors"])


def test_no_targets_and_stop_twice_are_harmless():
    load = ServiceLoad([]).start()
    assert load.stop() == [] and load.stop() == []
    before = threading.active_count()
    load = ServiceLoad([ServiceTarget("x", "http://127.0.0.1:9", ServiceRequest(path="/", rate=1))]).start()
    load.stop()
    assert threading.active_count() <= before        # the thread is joined: nothing left running


def test_bad_requests_are_refused_with_the_field():
    with pytest.raises(ValidationError, match="rate"):
        ServiceRequest(path="/x", rate=0)
    with pytest.raises(ValidationError, match="path"):
        ServiceRequest(path="x", rate=1)
    with pytest.raises(ValidationError, match="request needs a command"):
        Service(name="tts", kind="tts", model="m", vram_gb=1, request={"path": "/tts", "rate": 1})
    with pytest.raises(ValidationError, match="Extra inputs"):
        ServiceRequest(path="/x", rate=1, eval="os.system('x')")
    with pytest.raises(ValidationError, match="not JSON"):   # YAML's unquoted 2026-12-03 is a date
        ServiceRequest(path="/x", rate=1, body={"day": datetime.date(2026, 12, 3)})
    with pytest.raises(ValidationError, match="GET request sends no body"):
        ServiceRequest(path="/x", method="GET", rate=1, body={"x": 1})


def test_the_schedule_restarts_after_a_client_stall_instead_of_bursting():
    assert next_due(10.0, 10.05, 0.1) == (10.1, 0.0)                 # on time: the next arrival, no lag
    due, lag = next_due(10.0, 10.6, 0.1)                                # 0.5 s late: caught up, lag reported
    assert due == 10.1 and lag == pytest.approx(0.5)
    due, lag = next_due(10.0, 10.1 + MAX_CATCH_UP_S + 2.0, 0.1)       # a 3 s stall on Melt's side
    assert due == 10.1 + MAX_CATCH_UP_S + 2.0 and lag == pytest.approx(MAX_CATCH_UP_S + 2.0)


def test_a_stop_before_the_loop_runs_sends_nothing_and_joins():
    load = ServiceLoad([ServiceTarget("x", "http://127.0.0.1:9", ServiceRequest(path="/", rate=1000))])
    load._stopping.set()              # what stop() sets first: the loop that starts after it must not send
    load.start()
    (s,) = load.stop()
    assert s["sent"] == 0 and load._thread is None and "error" not in s


def test_a_failed_service_load_is_shown_not_just_stored():
    s = {"name": "tts", "sent": 0, "ok": 0, "err": 0, "errors": {}, "req_s": None, "client_lag_max_ms": 0.0,
         "latency_ms": {"p50": None, "p99": None}, "error": "service load stopped early: ImportError('aiohttp')"}
    assert describe(s).endswith("; service load stopped early: ImportError('aiohttp')")
    (row,) = service_rows([{"concurrency": 4, "services": [s]}])
    assert row["top error"].startswith("service load stopped early")
    lagged = {**s, "error": None, "client_lag_max_ms": 2500.0}
    assert "the client fell 2,500 ms behind its schedule" in describe(lagged)
