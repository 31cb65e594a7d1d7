"""bench.loadgen against a real streaming server on loopback (aiohttp, in a thread of this process).

The server speaks the vLLM OpenAI streaming dialect (one token per chunk, final usage chunk, [DONE]) and
injects faults by request index, so every failure the load generator reports can be checked one by one.
"""
from __future__ import annotations

import asyncio
import collections
import functools
import socket
import threading
import time

import orjson
import pytest
from aiohttp import web

from bench.config import LengthRange
from bench.loadgen import PRECONNECT_PARALLEL, REQUEST_COLUMNS, LevelPlan, LoadGenError, RequestResult, run_level
from bench.prompts import PromptMaker
from bench.workload import make_prompts
from catalog.tokenizer import tokenizer_file

VOCAB = 32000


@functools.cache
def _TOK():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tokenizer_file(VOCAB)))

FAULTS = ("ok", "http500", "disconnect", "no_usage", "error_event")


class StreamServer:
    """Tiny OpenAI-style streaming server. `fault_every`: request i (arrival order) gets fault
    FAULTS[i % len(FAULTS)] when set, else every request succeeds."""

    def __init__(self) -> None:
        self.fault_cycle = False
        self.delay_s = 0.0
        self.hang = False                # never finish streams (for stop/timeout tests)
        self.hang_first = 0              # ... or only the first N requests
        self.stall_first = False         # request 0 sends one chunk, then never another
        self.counts: collections.Counter = collections.Counter()
        self.bodies: list[dict] = []
        self.n = 0
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self.stopped = False
        self.api_key: str | None = None  # when set, requests without "Authorization: Bearer <key>" get 401
        self.auth_seen: list[str | None] = []
        # Keep-alive closes: "reused" drops a POST that arrives on a connection that already served one (what a
        # client sees when the server closed an idle connection as it was reused); "all" drops every POST.
        self.drop: str | None = None
        self.dropped = 0
        self._served_on: set = set()
        self.get_peers: list = []        # client (host, port) of each GET /v1/models (the pre-connect)
        self.post_peers: list = []       # ... and of each POST

    async def _models(self, request: web.Request) -> web.Response:
        self.get_peers.append(request.transport.get_extra_info("peername"))
        return web.json_response({"object": "list", "data": [{"id": "test-model", "object": "model"}]})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        conn = request.transport  # the object, held: an id() is reused once a closed transport is freed
        if self.drop == "all" or (self.drop == "reused" and conn in self._served_on):
            self.dropped += 1
            request.transport.close()  # no response at all: the client sees the connection go away
            return web.Response()
        self._served_on.add(conn)
        self.post_peers.append(request.transport.get_extra_info("peername"))
        self.auth_seen.append(request.headers.get("Authorization"))
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "bad api key"}}, status=401)
        body = orjson.loads(await request.read())
        with self._lock:
            i = self.n
            self.n += 1
            self.bodies.append(body)
        fault = FAULTS[i % len(FAULTS)] if self.fault_cycle else "ok"
        self.counts[fault] += 1
        if fault == "http500":
            return web.json_response({"error": {"message": "injected failure"}}, status=500)
        chat = request.path.endswith("/chat/completions")
        n_out = body.get("max_completion_tokens") or body["max_tokens"]
        prompt = body["messages"][0]["content"] if chat else body["prompt"]
        # text is counted as a real server would: through the served model's tokenizer (here Melt's BPE)
        n_in = len(_TOK().encode(prompt, add_special_tokens=False).ids) if isinstance(prompt, str) else len(prompt)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            for k in range(n_out):
                while self.hang or (i < self.hang_first and not self.stopped) or (
                        self.stall_first and i == 0 and k == 1 and not self.stopped):
                    await asyncio.sleep(0.05)
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                if chat:
                    choice = {"index": 0, "delta": {"content": f" t{k}"}, "finish_reason": None}
                else:
                    choice = {"index": 0, "text": f" t{k}", "logprobs": None, "finish_reason": None}
                event = orjson.dumps({"id": f"x{i}", "choices": [choice], "usage": None})
                await resp.write(b"data: " + event + b"\n\n")
                if fault == "disconnect" and k == 1:
                    request.transport.close()
                    return resp
                if fault == "error_event" and k == 1:
                    await resp.write(b'data: {"error": {"message": "injected error event", "code": 500}}\n\n')
                    await resp.write(b"data: [DONE]\n\n")
                    return resp
            if fault != "no_usage":
                usage = {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}
                await resp.write(b"data: " + orjson.dumps({"id": f"x{i}", "choices": [], "usage": usage}) + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        finally:
            self.active -= 1

    def start(self) -> None:
        ready = threading.Event()

        def serve() -> None:
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            app = web.Application()
            app.router.add_post("/v1/completions", self._handle)
            app.router.add_post("/v1/chat/completions", self._handle)
            app.router.add_get("/v1/models", self._models)
            self.runner = web.AppRunner(app, access_log=None)
            self.loop.run_until_complete(self.runner.setup())
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
            site = web.SockSite(self.runner, sock, backlog=4096)
            self.loop.run_until_complete(site.start())
            ready.set()
            self.loop.run_forever()
            self.loop.run_until_complete(self.runner.cleanup())
            self.loop.close()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def stop(self) -> None:
        self.hang = False
        self.stopped = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def server():
    s = StreamServer()
    s.start()
    yield s
    s.stop()


def _plan(server: StreamServer, **kw) -> LevelPlan:
    base = dict(base_url=server.base_url, model="test-model", concurrency=4, n_requests=20,
                input_len=LengthRange(min=8, max=8), output_len=LengthRange(min=5, max=5), seed=1, timeout_s=30)
    base.update(kw)
    return LevelPlan(**base)


def _run(plan: LevelPlan, **kw):
    got: list[RequestResult] = []
    progress: list[dict] = []
    outcome = run_level(plan, on_results=got.extend, on_progress=progress.append, **kw)
    return outcome, got, progress


def test_all_ok_exact_accounting_and_payload(server):
    plan = _plan(server, concurrency=4, n_requests=23, warmup_requests=3,
                 input_len=LengthRange(min=4, max=12), output_len=LengthRange(min=3, max=7))
    out, got, progress = _run(plan, procs=1)
    measured = [r for r in got if not r.warmup]
    assert len(got) == 26 == server.n
    assert sorted(r.seq for r in got) == list(range(26))
    assert {r.seq for r in got if r.warmup} == {0, 1, 2}
    assert out.n_sent == len(measured) == 23 and out.results_ok == 23 and out.results_err == 0
    assert out.warmup_sent == 3 and out.warmup_ok == 3
    assert not out.cancelled and out.error is None and out.procs == 1
    assert server.max_active <= 4
    # Requested lengths reach the server, usage comes back per request and is what gets recorded.
    prompts = make_prompts(26, plan.input_len, plan.seed)
    by_seq = {r.seq: r for r in got}
    for q in range(26):
        r = by_seq[q]
        assert r.ok and r.error is None and r.status_code == 200
        assert r.input_tokens == len(prompts[q])
        assert r.output_tokens == r.max_tokens == r.chunks
        assert 3 <= r.max_tokens <= 7
        assert 0 <= r.ttft_ms <= r.e2e_ms
        assert r.itl_mean_ms is not None and r.itl_max_ms >= r.itl_mean_ms - 1e-9
    sent_prompts = sorted(map(tuple, (b["prompt"] for b in server.bodies)))
    assert sent_prompts == sorted(map(tuple, prompts))
    b = server.bodies[0]
    assert b["stream"] is True and b["stream_options"] == {"include_usage": True}
    assert b["ignore_eos"] is True and "min_tokens" not in b and b["model"] == "test-model"
    # Output tokens and the ITL pool cover the measured OK requests only.
    assert out.output_tokens == sum(r.output_tokens for r in measured)
    assert out.input_tokens == sum(r.input_tokens for r in measured)
    assert out.itl.count == sum(r.chunks - 1 for r in measured)
    assert out.duration_s > 0 and out.end_ns > out.start_ns
    assert min(r.send_ns for r in measured) >= out.start_ns
    assert progress and progress[-1]["done"] == 23 and progress[-1]["ok"] == 23
    assert set(REQUEST_COLUMNS) == {f for f in RequestResult.__dataclass_fields__} - {"max_tokens"}


def test_injected_failures_are_counted_never_dropped(server):
    server.fault_cycle = True
    out, got, _ = _run(_plan(server, concurrency=5, n_requests=40), procs=1)
    assert server.n == 40 and len(got) == 40
    assert out.n_sent == 40 == out.results_ok + out.results_err
    errs = collections.Counter()
    for r in got:
        if r.ok:
            errs["ok"] += 1
        elif r.status_code == 500:
            errs["http500"] += 1
            assert "HTTP 500" in r.error and "injected failure" in r.error
        elif "server sent no usage" in r.error:
            errs["no_usage"] += 1
            assert r.output_tokens is None and r.chunks == 5
        elif "injected error event" in r.error:
            errs["error_event"] += 1
        else:
            errs["disconnect"] += 1
            assert r.chunks <= 2, r.error
    assert errs == server.counts
    assert out.results_ok == server.counts["ok"] == 8
    # Failed requests contribute neither tokens nor ITL gaps.
    assert out.output_tokens == 8 * 5 and out.itl.count == 8 * 4


def _text_plan(server, **kw) -> LevelPlan:
    return _plan(server, prompt_format="text", tokenizer_path=str(tokenizer_file(VOCAB)), **kw)


def test_chat_endpoint(server):
    plan = _text_plan(server, endpoint="chat", n_requests=6, concurrency=2)
    out, got, _ = _run(plan, procs=1)
    assert out.results_ok == 6
    maker = PromptMaker.for_plan(plan)
    contents = sorted(b["messages"][0]["content"] for b in server.bodies)
    assert contents == sorted(maker.request(q)[0] for q in range(6))
    assert all(b["max_completion_tokens"] == 5 for b in server.bodies)
    assert all(r.input_tokens == 8 for r in got)      # exact length through the tokenizer


def test_text_prompts_exact_length_with_prefix_sharded(server):
    """Text prompts (the run default): exact token counts through the tokenizer as the server counts them, one
    shared prefix, distinct suffixes, prompts made before "go" and identical however the level is sharded."""
    plan = _text_plan(server, n_requests=30, concurrency=6, input_len=LengthRange(min=40, max=90), prefix_len=32)
    out, got, _ = _run(plan, procs=2)
    assert out.results_ok == 30 and out.error is None
    maker = PromptMaker.for_plan(plan)
    expect = {q: maker.request(q) for q in range(30)}
    assert sorted(b["prompt"] for b in server.bodies) == sorted(p for p, _ in expect.values())
    heads = {b["prompt"][:len(maker.prefix_text)] for b in server.bodies}
    assert heads == {maker.prefix_text} and len({b["prompt"] for b in server.bodies}) == 30
    for r in got:
        n_in = _TOK().encode(expect[r.seq][0], add_special_tokens=False).ids
        assert r.input_tokens == len(n_in) == maker.prefix_n + (r.input_tokens - maker.prefix_n)
        assert 40 <= r.input_tokens - maker.prefix_n <= 90 and r.max_tokens == expect[r.seq][1]
    assert sum(s.prompts_inexact for s in out.shards) == 0


def test_text_plan_without_tokenizer_is_refused(server):
    with pytest.raises(LoadGenError, match="tokenizer"):
        _run(_plan(server, prompt_format="text"), procs=1)
    with pytest.raises(LoadGenError, match="chat endpoint sends text"):
        _run(_plan(server, endpoint="chat"), procs=1)


def test_duration_mode(server):
    server.delay_s = 0.01
    out, got, _ = _run(_plan(server, n_requests=None, duration_s=1.0, concurrency=3, warmup_requests=2), procs=1)
    measured = [r for r in got if not r.warmup]
    # Nothing is sent after the deadline and every in-flight request finishes and is counted.
    assert out.n_sent == len(measured) == out.results_ok > 3
    assert server.n == len(got)
    # A user checks the deadline, then builds its request and stamps the send: allow that gap (and a preemption
    # inside it), not a whole request's worth.
    deadline_ns = out.start_ns + 1_000_000_000
    assert all(r.send_ns < deadline_ns + 50_000_000 for r in measured)
    assert out.duration_s >= 1.0


def test_stop_event_cancels_in_flight(server):
    server.hang = True
    stop = threading.Event()

    def stop_when_all_streaming() -> None:  # no sleeps-as-sync: wait for the state, then stop
        deadline = time.monotonic() + 60
        while server.active < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
        stop.set()

    threading.Thread(target=stop_when_all_streaming, daemon=True).start()
    out, got, _ = _run(_plan(server, concurrency=6, n_requests=100), procs=2, stop=stop)
    assert out.cancelled
    assert len(got) == 6 == out.n_sent == out.results_err
    assert all(r.error == "cancelled" and not r.ok for r in got)
    assert all(r.chunks == 0 for r in got)


def test_timeout_is_an_error_and_the_user_goes_on(server):
    server.hang_first = 2
    # 3 s: the timeout also bounds the four requests that must succeed, and a loaded 2-core box can stall a
    # process for a good part of a second
    out, got, _ = _run(_plan(server, concurrency=2, n_requests=6, timeout_s=3), procs=1)
    assert out.n_sent == 6 and out.results_err == 2 and out.results_ok == 4 and not out.cancelled
    timed_out = sorted(r.seq for r in got if not r.ok)
    assert timed_out == [0, 1] and all(r.error == "timeout after 3s" for r in got if not r.ok)


def test_a_request_on_a_connection_the_server_closed_is_resent_once(server):
    """vLLM's uvicorn closes keep-alive connections idle for 5 s; a request written into one as it closes never
    reached the server and is re-sent on a fresh connection (counted in stale_retries), not reported failed."""
    server.drop = "reused"
    out, got, _ = _run(_plan(server, concurrency=2, n_requests=10), procs=1)
    assert out.n_sent == 10 == out.results_ok and out.results_err == 0
    retries = sum(sh.stale_retries for sh in out.shards)
    assert retries == server.dropped > 0
    assert sum(sh.new_connections for sh in out.shards) >= retries  # each re-send needed a new connection
    assert all(r.ok and r.output_tokens is not None for r in got)


def test_every_user_gets_its_own_connection_before_the_level(server):
    """More users than connects in flight (PRECONNECT_PARALLEL): each still has a pre-opened connection, so no
    measured request pays a connect. (aiohttp hands a connection back to the pool once a small response is read;
    pre-connecting in batches reused the first batch's connections and left the other users to connect at "go",
    into the accept queue of a server already busy with the rest: seconds of TTFT on an H100 at 1,024 users.)"""
    users = PRECONNECT_PARALLEL * 2 + 44
    out, got, _ = _run(_plan(server, concurrency=users, n_requests=users, output_len=LengthRange(min=2, max=2)),
                       procs=1)
    assert out.results_ok == users
    assert len(set(server.get_peers)) == users                  # one connection per user before the level
    assert set(server.post_peers) <= set(server.get_peers)       # every measured request went over one of them
    assert sum(sh.new_connections for sh in out.shards) == 0


def test_connect_at_go_opens_the_connections_inside_the_level(server):
    """--connect-at-go (as vllm bench serve): no pre-connect, so every user's first request pays its TCP connect."""
    users = 24
    out, _, _ = _run(_plan(server, concurrency=users, n_requests=users, output_len=LengthRange(min=2, max=2),
                           preconnect=False), procs=1)
    assert out.results_ok == users
    assert server.get_peers == []                                 # no pre-connect GET before the level
    assert len(set(server.post_peers)) == users                   # each user connected for its request
    assert sum(sh.new_connections for sh in out.shards) == users


def test_a_server_that_drops_every_request_gets_errors_after_one_resend(server):
    server.drop = "all"
    out, got, _ = _run(_plan(server, concurrency=2, n_requests=6), procs=1)
    assert out.n_sent == 6 == out.results_err and out.results_ok == 0  # counted, never dropped
    assert sum(sh.stale_retries for sh in out.shards) == 6 and server.dropped == 12
    assert all("ServerDisconnected" in (r.error or "") or "Connection" in (r.error or "") for r in got)


def test_a_request_that_stalls_mid_stream_ends_the_level_when_it_fails(server):
    """Duration runs until every request is done, failed ones included (vllm bench serve gathers them all): a
    stream that stalled after its first chunk and timed out ends at its timeout, not at its last chunk."""
    server.stall_first = True
    out, got, _ = _run(_plan(server, concurrency=2, n_requests=6, timeout_s=2), procs=1)
    assert out.results_err == 1 and out.results_ok == 5
    assert out.duration_s >= 2.0  # otherwise the 5 quick requests would make it a few ms and inflate tok/s


def test_multiprocess_sharding_exact_total(server):
    server.delay_s = 0.001
    out, got, _ = _run(_plan(server, concurrency=7, n_requests=61, warmup_requests=5), procs=3)
    assert out.procs == 3 and len(out.shards) == 3 and sorted(s.users for s in out.shards) == [2, 2, 3]
    assert len(got) == 66 == server.n
    assert sorted(r.seq for r in got) == list(range(66))
    assert out.n_sent == 61 == out.results_ok
    assert out.itl.count == 61 * 4
    assert server.max_active <= 7
    assert all(s.error is None and s.wall_s > 0 for s in out.shards)


def test_connection_refused_counts_errors():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    plan = LevelPlan(base_url=f"http://127.0.0.1:{port}", model="m", concurrency=2, n_requests=5,
                     input_len=LengthRange(min=2, max=2), output_len=LengthRange(min=2, max=2))
    out, got, _ = _run(plan, procs=1)
    assert out.results_err == 5 == len(got) and out.results_ok == 0
    assert all("Connect" in r.error for r in got)


def test_bad_plans_fail_before_sending():
    with pytest.raises(LoadGenError):
        run_level(LevelPlan(base_url="http://127.0.0.1:9", model="m", n_requests=1, duration_s=1.0),
                  on_results=lambda r: None)
    with pytest.raises(LoadGenError):
        run_level(LevelPlan(base_url="http://127.0.0.1:9", model="m", endpoint="embeddings", n_requests=1),
                  on_results=lambda r: None)


def test_shard_killed_mid_level_every_request_still_accounted(server):
    import multiprocessing
    import os
    import signal

    server.hang = True
    killed = []

    def kill_one_shard_when_streaming() -> None:
        deadline = time.monotonic() + 60
        while server.active < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        shard = next(p for p in multiprocessing.active_children() if p.name.startswith("melt-loadgen-"))
        killed.append(shard.name)
        os.kill(shard.pid, signal.SIGKILL)

    threading.Thread(target=kill_one_shard_when_streaming, daemon=True).start()
    out, got, _ = _run(_plan(server, concurrency=4, n_requests=50), procs=2)
    assert killed
    assert len(got) == 4 == out.n_sent == out.results_err          # 4 taken slots, 4 results
    assert sorted(r.seq for r in got) == [0, 1, 2, 3]
    lost = [r for r in got if r.error.startswith("result lost")]
    cancelled = [r for r in got if r.error == "cancelled"]        # the surviving shard was stopped
    assert len(lost) == 2 and len(cancelled) == 2
    assert "exited with code -9" in out.error and "exited with code -9" in lost[0].error


def test_open_file_limit_fails_with_a_clear_message(tmp_path):
    import subprocess
    import sys
    code = ("import resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))\n"
            "from bench.loadgen import LevelPlan, LoadGenError, run_level\n"
            "try:\n"
            "    run_level(LevelPlan(base_url='http://127.0.0.1:9', model='m', concurrency=1000, n_requests=1),\n"
            "              procs=1, on_results=lambda r: None)\n"
            "except LoadGenError as e:\n"
            "    print('ERR', e)\n")
    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert r.stdout.startswith("ERR") and "RLIMIT_NOFILE" in r.stdout and "1064" in r.stdout, r.stdout + r.stderr


def test_request_rate_mode_follows_the_poisson_schedule(server):
    import random
    plan = _plan(server, concurrency=4, n_requests=20, request_rate=20.0, warmup_requests=2)
    out, got, _ = _run(plan, procs=1)
    measured = [r for r in got if not r.warmup]
    assert out.n_sent == 20 == out.results_ok and out.request_rate == 20.0
    # The shard's arrival schedule is seeded: the 20th request cannot leave before the 20th arrival.
    rng, t, arrivals = random.Random(f"melt-arrivals-{plan.seed}-0"), 0.0, []
    for _ in range(20):
        arrivals.append(t)
        t += rng.expovariate(20.0)
    # uvloop timers may fire up to ~1.2 ms early (measured); 5 ms is still far below the mean gap of 50 ms
    assert max(r.send_ns for r in measured) - out.start_ns >= arrivals[-1] * 1e9 - 5e6
    assert all(r.queue_ms is not None and r.queue_ms >= 0 for r in measured)


def test_shard_sizing_helpers(monkeypatch, tmp_path):
    from bench import loadgen

    monkeypatch.setattr(loadgen, "CGROUP_FS", str(tmp_path))            # no quota here
    assert loadgen.split_even(10, 3) == [4, 3, 3] and sum(loadgen.split_even(10_000, 7)) == 10_000
    monkeypatch.setattr(loadgen.os, "sched_getaffinity", lambda pid: set(range(2)))   # this CI machine
    assert loadgen.auto_procs(1) == 1 and loadgen.auto_procs(199) == 1 and loadgen.auto_procs(200) == 2
    monkeypatch.setattr(loadgen.os, "sched_getaffinity", lambda pid: set(range(16)))  # a GPU server
    assert loadgen.auto_procs(1) == 1 and loadgen.auto_procs(64) == 1
    assert loadgen.auto_procs(128) == 2 and loadgen.auto_procs(199) == 4           # 1 per 64 users, <= 16 / 4
    assert loadgen.auto_procs(200) == 4 and loadgen.auto_procs(5000) == 5 and loadgen.auto_procs(100_000) == 16
    monkeypatch.setattr(loadgen.os, "sched_getaffinity", lambda pid: {0})
    assert loadgen.auto_procs(10_000) == 1
    # a container with a 4-CPU quota on a 64-core node: 4 usable cores (cgroup v2, then v1)
    monkeypatch.setattr(loadgen.os, "sched_getaffinity", lambda pid: set(range(64)))
    (tmp_path / "cpu.max").write_text("400000 100000\n")
    assert loadgen.usable_cores() == 4 and loadgen.auto_procs(1024) == 2     # was 16 with the affinity set alone
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert loadgen.usable_cores() == 64
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("250000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert loadgen.usable_cores() == 3


def _first_sends(got: list[RequestResult]) -> dict[int, int]:
    first: dict[int, int] = {}
    for r in got:
        if not r.warmup and (r.user not in first or r.send_ns < first[r.user]):
            first[r.user] = r.send_ns
    return first


@pytest.mark.parametrize("procs", [1, 2])
def test_ramp_up_spaces_first_requests_by_global_user_index(server, procs):
    """User g of C sends its first measured request at go + g * ramp / C, across shards (global indices)."""
    server.delay_s = 0.05                                        # 5 chunks: ~250 ms per request
    plan = _plan(server, concurrency=6, n_requests=40, ramp_s=1.2, warmup_requests=2)
    out, got, _ = _run(plan, procs=procs)
    assert out.n_sent == 40 == out.results_ok and out.ramp_s == 1.2
    first = _first_sends(got)
    assert sorted(first) == list(range(6))                      # every user, each with its own index
    for g, t in first.items():
        due = out.start_ns + g * 200_000_000                     # 1.2 s / 6 users
        assert due - 5_000_000 <= t <= due + 60_000_000, (g, (t - out.start_ns) / 1e6)
    # closed loop per user: a user's next request leaves after its previous one ended
    for u in range(6):
        mine = sorted((r for r in got if r.user == u and not r.warmup), key=lambda r: r.send_ns)
        assert all(b.send_ns >= a.send_ns + a.e2e_ms * 1e6 for a, b in zip(mine, mine[1:]))


def test_no_ramp_starts_every_user_at_go(server):
    out, got, _ = _run(_plan(server, concurrency=4, n_requests=8, ramp_s=0.0), procs=1)
    assert max(_first_sends(got).values()) - out.start_ns < 50_000_000


def test_steady_rule_drains_once_every_user_has_enough(server):
    """Neither n_requests nor duration: the parent stops taking requests after min_steady_s of steady state and
    min_requests_per_user per user; in-flight requests finish and are counted."""
    from bench.steady import steady_window

    server.delay_s = 0.01                                        # 5 chunks: ~50 ms per request
    plan = _plan(server, concurrency=4, n_requests=None, ramp_s=0.2, min_steady_s=1.0, min_requests_per_user=30,
                 max_level_s=60)
    out, got, progress = _run(plan, procs=1)
    measured = [r for r in got if not r.warmup]
    assert out.stop_reason.startswith("steady rule met") and out.take_until_ns is not None
    assert out.n_sent == len(measured) == out.results_ok == server.n
    per_user = collections.Counter(r.user for r in measured)
    assert sorted(per_user) == [0, 1, 2, 3] and min(per_user.values()) >= 30
    start, end = steady_window(got, out.take_until_ns, users=4)
    assert end - start >= 1.0e9 and out.duration_s < 20
    # the drain stops new requests: nothing leaves later than one pipe hop + a request build after "drain"
    assert max(r.send_ns for r in measured) < out.take_until_ns + 100_000_000
    assert progress[-1]["steady_s"] >= 1.0


def test_steady_rule_hard_cap_ends_a_level_that_never_gets_enough(server):
    server.delay_s = 0.01
    plan = _plan(server, concurrency=2, n_requests=None, min_steady_s=500.0, max_level_s=1.0)
    out, got, _ = _run(plan, procs=1)
    assert out.stop_reason.startswith("hard cap") and "1 s" in out.stop_reason
    assert 1.0 <= out.duration_s < 5 and out.take_until_ns == out.start_ns + 1_000_000_000
    assert out.n_sent == out.results_ok > 0


def test_burstiness_follows_the_seeded_gamma_schedule(server):
    import random
    plan = _plan(server, concurrency=4, n_requests=20, request_rate=20.0, burstiness=0.5)
    out, got, _ = _run(plan, procs=1)
    measured = [r for r in got if not r.warmup]
    assert out.n_sent == 20 == out.results_ok
    rng, t, arrivals = random.Random(f"melt-arrivals-{plan.seed}-0"), 0.0, []
    for _ in range(20):
        arrivals.append(t)
        t += rng.gammavariate(0.5, 1 / (20.0 * 0.5))            # shape B, mean 1/rate
    sends = sorted(r.send_ns - out.start_ns for r in measured)
    assert sends[-1] >= arrivals[-1] * 1e9 - 5e6
    # each request leaves at (or, when every user is busy, after) its arrival, never before it
    assert all(s >= a * 1e9 - 5e6 for s, a in zip(sends, arrivals))


def test_trace_replay_sends_at_the_arrival_times(server, tmp_path):
    """A prompt file whose rows carry "t" is a trace: one request per row, each sent at go + t (an open loop capped by
    the users), with the row's lengths; a request that finds every user busy goes late and says so in queue time."""
    trace = tmp_path / "trace.jsonl"
    rows = [(0.0, 8), (0.3, 12), (0.3, 9), (0.6, 10), (0.9, 11)]
    trace.write_text("".join(f'{{"t": {t}, "input_len": {n}, "output_len": 3}}\n' for t, n in rows))
    plan = _plan(server, n_requests=len(rows), concurrency=3, prompt_file=str(trace))
    out, got, _ = _run(plan, procs=1)
    assert out.results_ok == 5 and out.error is None
    by_seq = {r.seq: r for r in got}
    sends = [(by_seq[q].send_ns - out.start_ns) / 1e9 for q in range(5)]
    for (t, n), sent, q in zip(rows, sends, range(5)):
        assert t - 0.005 <= sent <= t + 0.25, (q, t, sent)           # sent at its arrival, not before
        assert by_seq[q].input_tokens == n and by_seq[q].max_tokens == 3
    assert out.duration_s >= 0.9


def test_trace_rows_must_all_carry_ordered_times(tmp_path):
    from bench.prompts import PromptError, load_prompt_file

    f = tmp_path / "t.jsonl"
    for body, msg in (('{"t": 1, "input_len": 4}\n{"t": 0.5, "input_len": 4}\n', "never decrease"),
                      ('{"t": 1, "input_len": 4}\n{"input_len": 4}\n', "every row"),
                      ('{"input_len": 4}\n{"t": 1, "input_len": 4}\n', "every row"),
                      ('{"t": -1, "input_len": 4}\n', "from 0 to"), ('{"t": Infinity, "input_len": 4}\n', "from 0 to")):
        f.write_text(body)
        with pytest.raises(PromptError, match=msg):
            load_prompt_file(f)
