"""Network faults between the load generator and a real sim engine, through tests/faults/proxy.py.

Each case asserts that every request is accounted for (n_sent == ok + err, one result per request), that the
failures carry an error of their own kind (never a success, never a hang), and that nothing is left running."""
from __future__ import annotations

import collections
import time

import pytest

from bench.config import LengthRange
from bench.loadgen import LevelPlan, run_level
from tests.faults.conftest import MODEL
from tests.faults.proxy import FaultProxy, Faults

pytestmark = pytest.mark.usefixtures("nothing_left")


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _level(proxy: FaultProxy, **kw):
    plan = dict(base_url=proxy.base_url, model=MODEL, concurrency=4, n_requests=24, input_len=LengthRange(min=16,
                max=16), output_len=LengthRange(min=8, max=8), seed=3, timeout_s=60, stall_timeout_s=2.0)
    plan.update(kw)
    got = []
    t0 = time.monotonic()
    out = run_level(LevelPlan(**plan), procs=1, on_results=got.extend)
    # every request that took a slot has exactly one result, and the outcome's counts agree with them
    assert len(got) == out.n_sent == out.results_ok + out.results_err
    assert len({r.seq for r in got}) == len(got)
    assert out.results_ok == sum(r.ok for r in got)
    return out, got, time.monotonic() - t0


def _kinds(got) -> collections.Counter:
    return collections.Counter((r.error or "ok").split(":")[0] for r in got)


def test_a_hung_engine_fails_its_requests_as_stalled_and_ends_the_level(sim):
    """Every 4th request stops streaming mid-response (the issue's case: 4 users, a quarter of the requests hang).
    Once every user waits on a silent stream the server is silent: those requests fail as stalled after the stall
    timeout and the level ends with that cause, instead of waiting out the 600 s request timeout."""
    with FaultProxy(_port(sim[1]), Faults(every=4, stall_after=400)) as proxy:
        out, got, took = _level(proxy, n_requests=200, timeout_s=600)
    assert out.stalled and "no byte from the server for 2s" in out.stalled
    stalled = [r for r in got if not r.ok and r.error.startswith("stalled")]
    assert len(stalled) == 4  # the four users' silent requests
    assert all(r.error.startswith(("stalled", "cancelled")) for r in got if not r.ok)
    assert out.n_sent < 200 and took < 60


def test_a_server_that_accepts_and_never_answers(sim):
    with FaultProxy(_port(sim[1]), Faults(blackhole=True)) as proxy:
        out, got, took = _level(proxy, stall_timeout_s=1.5)
    assert out.stalled and out.results_ok == 0
    assert _kinds(got) == {"stalled": 4}
    assert took < 30


def test_requests_sent_after_the_server_went_silent_are_stalled_too(sim):
    """Users ramped over 1.2 s: when the first request has waited the stall timeout, the last one has waited less.
    The level stops for the silent server, and every request in flight is stalled, none "cancelled" (seen on a
    loaded CI machine, where sends spread out by themselves)."""
    with FaultProxy(_port(sim[1]), Faults(blackhole=True)) as proxy:
        out, got, took = _level(proxy, stall_timeout_s=1.5, ramp_s=1.2)
    assert out.stalled and out.results_ok == 0
    assert _kinds(got) == {"stalled": 4}
    assert took < 30


def test_connection_resets_mid_stream_are_errors_of_their_own(sim):
    with FaultProxy(_port(sim[1]), Faults(every=3, reset_after=300)) as proxy:
        out, got, _ = _level(proxy)
        faulted = proxy.faulted
    assert out.results_err == faulted == 8 and out.results_ok == 16 and not out.stalled
    assert _kinds(got) == {"ok": 16, "ClientPayloadError": 8}
    assert all("Connection reset" in r.error and r.status_code == 200 for r in got if not r.ok)


def test_latency_and_a_bandwidth_cap_slow_requests_down_but_fail_none(sim):
    with FaultProxy(_port(sim[1]), Faults(latency_s=0.05)) as proxy:
        out, got, _ = _level(proxy, n_requests=12)
    assert out.results_ok == 12 and min(r.ttft_ms for r in got) >= 50
    with FaultProxy(_port(sim[1]), Faults(bandwidth_bps=20_000)) as proxy:
        out, got, _ = _level(proxy, n_requests=8, concurrency=2)
    assert out.results_ok == 8 and not out.stalled


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"


def test_an_oversized_line_is_an_error_not_an_unbounded_buffer(sim):
    with FaultProxy(_port(sim[1]), Faults(reply=HEAD + b"data: {\"x\": \"" + b"y" * (3 << 20))) as proxy:
        out, got, _ = _level(proxy, n_requests=8)
    assert out.results_err == 8
    assert _kinds(got) == {"oversized SSE event": 8}


def test_a_partial_http_response_is_an_error_never_a_resend_that_hides_it(sim):
    """A server that closes inside the response head had answered: re-sending the request (as for a keep-alive
    connection the server closed while idle) would turn every second failure below into a success."""
    with FaultProxy(_port(sim[1]), Faults(every=2, reply=b"HTTP/1.1 200 OK\r\nContent-Type: text/ev")) as proxy:
        out, got, _ = _level(proxy, n_requests=8)
        faulted = proxy.faulted
    assert out.results_err == faulted == 4 and out.results_ok == 4
    assert sum(sh.stale_retries for sh in out.shards) == 0
    assert _kinds(got) == {"ok": 4, "partial HTTP response": 4}
