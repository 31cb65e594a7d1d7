"""Streaming load generator: one concurrency level, closed loop, sharded over processes.

`run_level(plan, ...)` blocks the calling thread while `procs` shard processes (spawned fresh, each on
uvloop + aiohttp, one ClientSession per shard) drive the level. Spawned, never forked (the worker has
threads), so a script that calls run_level needs the usual `if __name__ == "__main__":` guard. All users
share one request counter, so the total is exact however the level is sharded, and work flows to
whichever shard has a free user. Phases:

  warm-up  users send `warmup_requests` requests (closed loop) and wait for them; excluded from metrics.
  connect  each shard opens one keep-alive connection per user, at most 128 connects in flight (see
           _Shard._preconnect): 10,000 simultaneous connects overflow a server's accept queue and would add
           seconds of TTFT. Any later connect (a server that closed idle connections) is paced the same way
           (_paced_connector) and counted (new_connections); a request that died on such a connection before
           any response is re-sent once (counted in stale_retries, never hidden as an error it was not).
           LevelPlan.preconnect False (--connect-at-go) skips this phase: users connect at "go", inside the
           measured time, as vllm bench serve's do.
  barrier  every shard reports "warm"; the parent sends "go" with one start time, so spawn skew between
           shards never shows up as a ramp inside the measured window.
  measure  each user sends its next request when its last one ends (or, with request_rate, at the next
           arrival when free: Poisson, or gamma with shape `burstiness`) until the counter reaches
           warmup + n_requests or the deadline start + duration_s passes. In-flight requests then finish;
           none is dropped. Ramp-up (closed loop): user g of C (global index; shard i owns users
           offset_i .. offset_i + users_i - 1) sends its first measured request at go + g * ramp_s / C, so
           users do not move in lockstep. Every result carries its user index.
  steady   with neither n_requests nor duration_s, the parent decides when the level has enough: at least
  rule     min_steady_s of steady state (every user has finished its first measured request; see
           bench/steady.py) and every user at least min_requests_per_user measured requests (closed loop; a
           request-rate level's users are only a cap, so there it is the steady seconds alone). It then sends
           "drain": shards stop taking requests and let in-flight ones finish. A level that never gets
           there stops taking at go + max_level_s (the shards' own deadline, so it holds even without the
           parent), and LevelOutcome.stop_reason says which it was.

Deployments: a plan with several `targets` (one per engine instance) spreads its requests over them with a
client-side balancer: request seq goes to route_table(weights)[seq % ROUTE_CYCLE] (by weight, or round robin for
equal weights), so the shared counter that makes the total exact also makes each target's share exact to within 2.
Each target has its own URL, served model name and prompt maker (its own tokenizer), and every result carries its
instance id. A plan without targets is the one server at base_url.

Results come back in batches about every 200 ms and are handed to `on_results` in the calling thread,
which is where the worker writes SQLite: the shards never wait on the database (a sender thread in each
shard owns the pipe, so a slow reader cannot stall an event loop either). Every request that took a slot
ends in exactly one result: HTTP errors, timeouts (timeout_s, enforced by a per-shard watchdog), SSE
error events, disconnects, missing usage, a stop ("cancelled") and even a shard that dies ("result lost")
are all counted as errors.

Stall watchdog: a hung engine (deadlocked scheduler, stuck collective) keeps its connections open and sends
nothing, so no request ever ends and a 600 s request timeout is far too long to notice. Every shard
publishes the time of the last byte it read from the server into a shared array; when no shard has read a
byte for stall_timeout_s while requests are in flight, those requests fail as "stalled: ..." and the level
stops (LevelOutcome.stalled says why). Only silence from the whole server counts: one slow queue while other
streams flow is not a stall (a request waiting in a busy server's queue for minutes is normal).

Definitions match `vllm bench serve` (vllm/benchmarks/lib/endpoint_request_func.py): a content chunk is
an SSE event whose `choices` is non-empty; TTFT = first content chunk - send; E2E = last content chunk -
send; ITL = gaps between content chunks. One perf_counter_ns() per socket read is shared by every event
in that read, so chunks that arrived together get gap 0. Token counts come only from the server's usage
(stream_options.include_usage); a stream without usage is an error, never a guess. Clock: perf_counter
(CLOCK_MONOTONIC, shared by all processes) for durations, converted to time.time_ns() wall clock for
send_ns/start_ns/end_ns so requests line up with telemetry.

Client health: each shard reports its CPU use over the measured phase (getrusage), its busiest ~1 s and
its event-loop lag; a shard above CLIENT_BOUND_PCT of a core marks the level client_bound (the numbers
then describe the client, not the server). Capacity: docs/PERFORMANCE.md, bench/perf/loadgen_capacity.py.
"""
from __future__ import annotations

import asyncio
import functools
import gc
import math
import multiprocessing as mp
import os
import pickle
import queue
import random
import resource
import signal
import threading
import time
import traceback
from array import array
from dataclasses import dataclass, field, fields, replace
from multiprocessing.connection import Connection, wait
from typing import Callable, Literal

import orjson

from bench.config import LengthRange, WorkloadSpec
from bench.hist import LogHistogram
from bench.steady import SteadyTracker, completion_ns

CLIENT_BOUND_PCT = 90.0   # a shard busier than this (% of one core) makes the level untrustworthy
BATCH_S = 0.2             # how often shards ship results
PROGRESS_S = 1.0
STOP_GRACE_S = 10.0       # after a stop, how long shards get to report before they are killed
FD_HEADROOM = 64          # files a shard needs beyond one socket per user (pipes, loop, logs)
PRECONNECT_PARALLEL = 128  # connection attempts in flight per shard, ever (far below any listen backlog)
PRECONNECT_TIMEOUT_S = 30.0  # one GET, waiting for its connect slot included
PREFETCH_MAX = 20_000     # text prompts a shard makes before "go" (bench.prompts.PromptMaker.prefetch) ...
PREFETCH_BYTES = 256 << 20  # ... and at most this much text (~8 bytes a token)
MAX_SSE_EVENT = 1 << 20   # bytes of one SSE event: Melt asks for no logprobs, so its events are < 1 kB; beyond this
                          # a stream is broken (an endless line would grow the buffer, and its copies, without end)


@functools.cache
def _paced_connector(aiohttp):
    """aiohttp's TCPConnector with at most PRECONNECT_PARALLEL TCP connects in flight.

    The pre-connect opens every user's connection before the level, but a server may close idle keep-alive
    connections (vLLM's uvicorn after 5 s; opening 10,000 can take longer than that), and some servers close after
    every response. Those users then connect at "go" or mid-level, all in the same millisecond, which overflows the
    server's accept queue: dropped SYNs come back after 1, 3, 7 s as TTFT the server never caused. Pacing the
    connects keeps each one at loopback speed; the wait is inside the request's TTFT, as any connect is.
    (A factory because the shard imports aiohttp only once it runs.)"""

    class PacedConnector(aiohttp.TCPConnector):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self._connect_slots = asyncio.Semaphore(PRECONNECT_PARALLEL)
            self.opened = 0  # TCP connects so far (the measured phase should add none)

        async def _create_connection(self, req, traces, timeout):
            async with self._connect_slots:
                self.opened += 1
                return await super()._create_connection(req, traces, timeout)

    return PacedConnector


class LoadGenError(RuntimeError):
    """The level could not be run at all (bad plan, open-file limit); nothing was sent."""


@dataclass(slots=True)
class RequestResult:
    seq: int                   # order of taking a request slot within the level (warm-up first)
    warmup: bool
    send_ns: int               # wall clock (time.time_ns) right before the request was handed to aiohttp
    queue_ms: float | None     # send - due: due = previous request's end (closed loop) or Poisson arrival
    ttft_ms: float | None
    e2e_ms: float | None
    input_tokens: int | None   # server usage.prompt_tokens
    output_tokens: int | None  # server usage.completion_tokens
    chunks: int                # content chunks received
    itl_mean_ms: float | None
    itl_max_ms: float | None
    ok: bool
    status_code: int | None
    error: str | None
    max_tokens: int | None = None   # requested output length (not a storage column)
    user: int | None = None         # global user index 0..C-1 (None: a lost result whose user is unknown)
    instance_id: int | None = None  # the engine instance (storage row id) the request was sent to


ROUTE_CYCLE = 1 << 16     # length of a deployment's routing table (request seq -> target), repeated


@dataclass(frozen=True)
class Target:
    """One engine instance of a deployment that a level sends to: where, under which served model name, its share of
    the requests, the instance row its requests are recorded under, and what its prompts are made with (each
    instance may serve a different model, so each has its own tokenizer)."""

    base_url: str
    model: str
    weight: float = 1.0
    instance_id: int | None = None
    tokenizer_path: str | None = None
    vocab_size: int | None = None
    name: str = ""


@functools.lru_cache(maxsize=16)
def route_table(weights: tuple[float, ...]) -> bytes:
    """Request seq -> target index, as a table of ROUTE_CYCLE bytes used as table[seq % ROUTE_CYCLE]: the
    client-side balancer. Each next slot goes to the target furthest behind its share (a deficit round robin), so
    over ANY run of consecutive requests each target's count is within 2 of weight/sum x the run's length (within 1
    from request 0), and equal weights are plain round robin. Made once per process (cached) and shipped to the
    shards in LevelPlan.route; the hot path is one index."""
    total = float(sum(weights))
    if len(weights) > 255 or not total > 0 or any(w < 0 for w in weights):
        raise LoadGenError("route weights: 1..255 targets, each >= 0, not all 0")
    share = [w / total for w in weights]
    got = [0] * len(weights)
    rest = range(1, len(weights))
    out = bytearray(ROUTE_CYCLE)
    for k in range(1, ROUTE_CYCLE + 1):
        best, lag = 0, k * share[0] - got[0]
        for j in rest:  # the furthest behind; a tie goes to the first
            v = k * share[j] - got[j]
            if v > lag:
                best, lag = j, v
        got[best] += 1
        out[k - 1] = best
    return bytes(out)


# RequestResult fields that are columns of storage.models.Request (for bulk inserts).
REQUEST_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(RequestResult) if f.name != "max_tokens")


@dataclass
class LevelPlan:
    base_url: str
    model: str
    endpoint: Literal["completions", "chat"] = "completions"
    concurrency: int = 1
    n_requests: int | None = None
    duration_s: float | None = None
    warmup_requests: int = 0
    input_len: LengthRange = field(default_factory=lambda: LengthRange(min=512, max=512))
    output_len: LengthRange = field(default_factory=lambda: LengthRange(min=128, max=128))
    seed: int = 0
    request_rate: float | None = None
    timeout_s: float = 600.0
    stall_timeout_s: float | None = 60.0   # server silent this long with requests in flight -> they fail, level stops
    api_key: str | None = None
    vocab_size: int | None = None
    # What the prompts are (bench.prompts). The plan's default is token ids, which need no tokenizer (tests, the
    # capacity benchmark); runs take WorkloadSpec's default, text through tokenizer_path.
    prompt_format: Literal["text", "token-ids"] = "token-ids"
    tokenizer_path: str | None = None
    prefix_len: int = 0
    prefix_seed: int = 0
    prompt_file: str | None = None
    burstiness: float = 1.0            # gamma shape of inter-arrival times (request_rate only); 1 = Poisson
    ramp_s: float = 0.0                # closed loop: user g's first measured request at go + g * ramp_s / C
    min_steady_s: float = 30.0         # steady rule (neither n_requests nor duration_s): see the module docstring
    min_requests_per_user: int = 5
    max_level_s: float = 1200.0        # steady rule's hard cap on the measured phase
    # Token counts: "server" = the stream's usage (the rule). "finish-length" = a server whose streams carry no usage
    # (llama-cpp-python's, engines/llamacpp.py): the request also asks min_tokens = max_tokens (its way to hold the
    # length; it ignores ignore_eos), a stream that ends with finish_reason "length" produced exactly max_tokens, and
    # its prompt tokens are the exact length the prompt was made to (None when it is not exact); any other ending is
    # an error. Levels record which (summary["usage_source"]).
    stream_usage: Literal["server", "finish-length"] = "server"
    # A deployment of several instances: the targets requests are spread over (route_table); empty = the one server
    # at base_url / model, its requests recorded under instance_id.
    targets: list[Target] = field(default_factory=list)
    instance_id: int | None = None
    route: bytes | None = None         # route_table of the targets, made once by run_level and shipped to the shards
    preconnect: bool = True            # False: no "connect" phase, users connect at go (as vllm bench serve)

    @property
    def steady_rule(self) -> bool:
        return self.n_requests is None and self.duration_s is None

    def routes(self) -> list[Target]:
        """Every target of the level (one for a single-engine run)."""
        return list(self.targets) or [Target(self.base_url, self.model, 1.0, self.instance_id, self.tokenizer_path,
                                             self.vocab_size)]

    def target_of(self, seq: int) -> int:
        """Index (into routes()) of the target request `seq` goes to."""
        return route_table(tuple(t.weight for t in self.targets))[seq % ROUTE_CYCLE] if len(self.targets) > 1 else 0

    def for_target(self, t: Target) -> "LevelPlan":
        """This plan as seen by one target (its prompts: tokenizer and vocabulary)."""
        return replace(self, base_url=t.base_url, model=t.model, tokenizer_path=t.tokenizer_path,
                       vocab_size=t.vocab_size, targets=[], instance_id=t.instance_id)

    def validate(self) -> None:
        if self.endpoint not in ("completions", "chat"):
            raise LoadGenError(f"endpoint must be 'completions' or 'chat', not {self.endpoint!r}")
        if self.concurrency < 1:
            raise LoadGenError("concurrency must be >= 1")
        if self.n_requests is not None and self.duration_s is not None:
            raise LoadGenError("give at most one of n_requests and duration_s (neither = the steady-state rule)")
        if self.n_requests is not None and self.n_requests < 1:
            raise LoadGenError("n_requests must be >= 1")
        if self.duration_s is not None and not self.duration_s > 0:
            raise LoadGenError("duration_s must be > 0")
        if self.warmup_requests < 0 or not self.timeout_s > 0:
            raise LoadGenError("warmup_requests must be >= 0 and timeout_s > 0")
        if self.request_rate is not None and not self.request_rate > 0:
            raise LoadGenError("request_rate must be > 0 (None = closed loop)")
        if not self.burstiness > 0 or self.ramp_s < 0:
            raise LoadGenError("burstiness must be > 0 and ramp_s >= 0")
        if not (self.min_steady_s > 0 and self.min_requests_per_user >= 1 and self.max_level_s > 0):
            raise LoadGenError("min_steady_s and max_level_s must be > 0, min_requests_per_user >= 1")
        if self.prompt_format not in ("text", "token-ids"):
            raise LoadGenError(f"prompt_format must be 'text' or 'token-ids', not {self.prompt_format!r}")
        if self.endpoint == "chat" and self.prompt_format == "token-ids":
            raise LoadGenError("the chat endpoint sends text: use prompt_format 'text'")
        if len(self.targets) > 1:
            route_table(tuple(t.weight for t in self.targets))  # bad weights fail here, before any shard
        try:
            from bench.prompts import PromptMaker

            # a missing tokenizer or a bad prompt file fails here, before any shard
            maker = None
            for t in self.routes():
                maker = PromptMaker.for_plan(self.for_target(t) if self.targets else self)
        except (ValueError, OSError) as e:
            raise LoadGenError(str(e)) from None
        if maker.arrivals is not None and self.request_rate is not None:
            raise LoadGenError("a trace brings its own arrival times: drop the request rate")
        if self.stall_timeout_s is not None and not self.stall_timeout_s > 0:
            raise LoadGenError("stall_timeout_s must be > 0 (None = no stall watchdog)")

    @classmethod
    def from_workload(cls, wl: WorkloadSpec, *, base_url: str, model: str, concurrency: int,
                      request_rate: float | None, seed: int | None = None,
                      api_key: str | None = None, vocab_size: int | None = None,
                      tokenizer_path: str | None = None, targets: list[Target] | None = None,
                      instance_id: int | None = None) -> "LevelPlan":
        """The plan of one level of `wl`. `request_rate`: this level's rate (one of wl.level_rates(): a rate sweep has
        several), None = closed loop; always given, so a rate sweep's level never silently becomes closed loop.
        `tokenizer_path`: what text prompts are made with (bench.sweep resolves it once per run)."""
        return cls(base_url=base_url.rstrip("/"), model=model, endpoint=wl.endpoint, concurrency=concurrency,
                   n_requests=wl.requests_for(concurrency), duration_s=wl.duration_s,
                   warmup_requests=wl.warmup_requests, input_len=wl.input_len, output_len=wl.output_len,
                   seed=wl.seed if seed is None else seed, request_rate=request_rate, timeout_s=wl.request_timeout_s,
                   api_key=api_key, vocab_size=vocab_size, burstiness=wl.burstiness,
                   ramp_s=wl.ramp_for(concurrency) if request_rate is None else 0.0,
                   min_steady_s=wl.min_steady_s, min_requests_per_user=wl.min_requests_per_user,
                   max_level_s=wl.max_level_s, prompt_format=wl.prompt_format, tokenizer_path=tokenizer_path,
                   prefix_len=wl.prefix_len, prefix_seed=wl.seed, prompt_file=wl.prompt_file,
                   stall_timeout_s=wl.stall_timeout_s, targets=list(targets or []), instance_id=instance_id,
                   preconnect=wl.preconnect)


@dataclass
class ShardStats:
    idx: int
    users: int
    cpu_s: float = 0.0            # user+sys CPU of the shard process during the measured phase
    wall_s: float = 0.0
    cpu_pct: float = 0.0          # cpu_s / wall_s, % of one core
    peak_cpu_pct: float = 0.0     # busiest ~1 s window of the measured phase
    loop_lag_mean_ms: float = 0.0  # event-loop lateness (a busy client delays every timestamp)
    loop_lag_max_ms: float = 0.0
    stale_retries: int = 0        # requests re-sent once because the server had closed their idle connection
    new_connections: int = 0      # TCP connects during the measured phase (0 when every pre-opened one was reused)
    prompts_inexact: int = 0      # text prompts sent one or more tokens off their target (bench.prompts)
    prompts_inline: int = 0       # text prompts made on the hot path (not made ahead in time: client CPU in the level)
    error: str | None = None


@dataclass
class LevelOutcome:
    results_ok: int               # measured (non-warm-up) requests only; n_sent == results_ok + results_err
    results_err: int
    n_sent: int
    start_ns: int                 # wall clock of the measured phase start ("go")
    end_ns: int                   # wall clock of the last measured completion
    duration_s: float
    itl: LogHistogram             # pooled inter-chunk gaps of the measured OK requests
    client_cpu_pct: float         # busiest shard, % of one core (average over the measured phase)
    client_bound: bool
    cancelled: bool
    warmup_sent: int = 0
    warmup_ok: int = 0
    warmup_err: int = 0
    input_tokens: int = 0         # measured OK requests, from usage
    output_tokens: int = 0
    procs: int = 1
    client_cpu_s: float = 0.0     # all shards, measured phase
    shards: list[ShardStats] = field(default_factory=list)
    error: str | None = None      # a shard failed; its unfinished requests are counted as errors
    stalled: str | None = None    # the server went silent with requests in flight: why the level stopped
    concurrency: int = 0
    request_rate: float | None = None
    ramp_s: float = 0.0
    # Wall clock after which no new request was taken: the duration deadline, the steady rule's drain (or its hard
    # cap); None for a request-bound level. bench/steady.py ends the steady window there at the latest.
    take_until_ns: int | None = None
    stop_reason: str | None = None  # why a steady-rule level stopped taking requests (enough steady state, or the cap)


# Users per shard on a big host. Measured (docs/PERFORMANCE.md, H200 Blitz, 2026-12-02): one shard driving 128
# streaming users at 20-23k output tok/s used 70-81% of a core, close to CLIENT_BOUND_PCT; a busy client delays
# its reads and shows the server slower than it is.
USERS_PER_SHARD_BIG_HOST = 64
BIG_HOST_CORES = 8


CGROUP_FS = "/sys/fs/cgroup"  # where the CPU quota is read (tests point it elsewhere)


def usable_cores() -> int:
    """CPUs this process may use: its affinity set, capped by a cgroup CPU quota (a container limited to 4 CPUs on a
    64-core node has 64 in its affinity set; cgroup v2 cpu.max or v1 cpu.cfs_quota_us / cpu.cfs_period_us say 4)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1

    def read(rel: str) -> str | None:
        try:
            with open(os.path.join(CGROUP_FS, rel)) as f:
                return f.read().strip()
        except OSError:
            return None

    v2 = read("cpu.max")
    quota, period = (v2.split() + [""])[:2] if v2 else (read("cpu/cpu.cfs_quota_us"), read("cpu/cpu.cfs_period_us"))
    try:
        if quota not in (None, "max", "-1") and int(period) > 0:
            return max(1, min(cores, math.ceil(int(quota) / int(period))))
    except (TypeError, ValueError):
        pass
    return cores


def auto_procs(concurrency: int) -> int:
    """Shard count: 1 below 200 users (one uvloop streams that on a small host), then ~1 per 1000 users, >= 2.
    On a host of >= 8 cores (a GPU server) also 1 per 64 users, up to a quarter of the cores (the rest stay with the
    engine): the per-shard cost grows with the streamed token rate, which a fast GPU makes high at few users."""
    cores = usable_cores()
    n = 1 if concurrency < 200 or cores < 2 else max(1, min(cores, max(2, math.ceil(concurrency / 1000)), concurrency))
    if cores >= BIG_HOST_CORES:
        n = max(n, min(cores // 4, math.ceil(concurrency / USERS_PER_SHARD_BIG_HOST)))
    return n


def split_even(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def raise_nofile(need: int) -> None:
    """Raise the soft RLIMIT_NOFILE to `need` (one socket per user plus headroom), or say which limit blocks."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        raise LoadGenError(
            f"a load-generator process needs {need} open files (one socket per concurrent user) but the "
            f"RLIMIT_NOFILE hard limit is {hard}: raise it (ulimit -Hn / limits.conf / LimitNOFILE=) "
            f"or spread the users over more client processes")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


# ================================================================================================
# Parent side
# ================================================================================================

def run_level(plan: LevelPlan, *, procs: int | None = None,
              on_results: Callable[[list[RequestResult]], None],
              on_progress: Callable[[dict], None] | None = None,
              stop: threading.Event | None = None) -> LevelOutcome:
    """Run one level (blocking). See the module docstring; every sent request ends in exactly one result."""
    plan.validate()
    if len(plan.targets) > 1 and plan.route is None:  # made once here (cached), not in every shard of every level
        plan = replace(plan, route=route_table(tuple(t.weight for t in plan.targets)))
    n = auto_procs(plan.concurrency) if procs is None else procs
    n = max(1, min(n, plan.concurrency))
    users = split_even(plan.concurrency, n)
    need = max(users) + FD_HEADROOM
    # Fail before spawning anything: a shard would hit the same wall.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        raise_nofile(need)  # raises LoadGenError naming the limit

    ctx = mp.get_context("spawn")  # the worker has threads (telemetry): never fork it
    counter = ctx.Value("q", 0)
    last_rx = ctx.RawArray("q", n)  # per shard: perf_counter ns of its last byte from the server (stall watchdog)
    shards: list[_ShardHandle] = []
    try:
        for i, u in enumerate(users):
            cmd_r, cmd_w = ctx.Pipe(duplex=False)
            data_r, data_w = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_shard_main, name=f"melt-loadgen-{i}", daemon=True,
                            args=(i, sum(users[:i]), u, plan, counter, last_rx, cmd_r, data_w))
            p.start()
            cmd_r.close()
            data_w.close()
            shards.append(_ShardHandle(i, u, p, cmd_w, data_r))
        return _Coordinator(plan, shards, counter, on_results, on_progress, stop).run()
    finally:
        for s in shards:
            s.kill()


class _ShardHandle:
    def __init__(self, idx: int, users: int, proc: mp.Process, cmd: Connection, data: Connection):
        self.idx, self.users, self.proc, self.cmd, self.data = idx, users, proc, cmd, data
        self.warm = False
        self.done = False
        self.stats: ShardStats | None = None
        self.t_last_end = 0
        self.itl: LogHistogram | None = None

    def send(self, msg: tuple) -> None:
        try:
            self.cmd.send(msg)
        except (BrokenPipeError, OSError):
            pass  # shard already gone; its liveness check reports it

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.join(timeout=2)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=2)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=2)
        for c in (self.cmd, self.data):
            c.close()


class _Coordinator:
    """Parent loop: reads shard messages, releases the barrier, delivers results, relays stop."""

    def __init__(self, plan, shards, counter, on_results, on_progress, stop):
        self.plan, self.shards, self.counter = plan, shards, counter
        self.on_results, self.on_progress, self.stop = on_results, on_progress, stop
        self.wall_off = time.time_ns() - time.perf_counter_ns()
        self.t0 = time.perf_counter_ns()
        self.t_go: int | None = None
        self.seen = bytearray()  # seen[seq] = 1 once request seq has a result (1 byte per request)
        self.c = {"ok": 0, "err": 0, "out": 0, "in": 0, "w_ok": 0, "w_err": 0}
        self.errors: list[str] = []
        self.stalled: str | None = None
        self.stopping = False
        self.tracker = (SteadyTracker(plan.concurrency, plan.min_requests_per_user, plan.request_rate is not None)
                        if plan.steady_rule else None)
        self.drain_ns: int | None = None   # wall clock of the steady rule's "drain"

    def _check_steady(self) -> None:
        """Steady rule: once the level has enough steady state, tell every shard to stop taking requests."""
        if self.tracker is None or self.drain_ns is not None or self.stopping or self.t_go is None:
            return
        now = time.time_ns()
        if self.tracker.enough(now, self.plan.min_steady_s):
            self.drain_ns = now
            for s in self.shards:
                s.send(("drain", "enough steady state"))

    def run(self) -> LevelOutcome:
        last_progress = 0.0
        stop_deadline = None
        by_fd = {s.data: s for s in self.shards}
        while not all(s.done for s in self.shards):
            if self.stop is not None and self.stop.is_set() and not self.stopping:
                self._stop_all("stopped")
            if self.stopping and stop_deadline is None:
                stop_deadline = time.monotonic() + STOP_GRACE_S
            if stop_deadline is not None and time.monotonic() > stop_deadline:
                for s in self.shards:
                    if not s.done:
                        self._shard_lost(s, f"did not stop within {STOP_GRACE_S:.0f}s")
                break
            batch: list[RequestResult] = []
            live = [s.data for s in self.shards if not s.done]
            for conn in wait(live, timeout=0.1):
                s = by_fd[conn]
                try:
                    msg = pickle.loads(conn.recv_bytes())
                except (EOFError, OSError):
                    s.proc.join(timeout=5)
                    self._shard_lost(s, f"exited with code {s.proc.exitcode}")
                    continue
                self._handle(s, msg, batch)
            for s in self.shards:  # a shard killed hard may leave its pipe open in no one: check the process
                if not s.done and not s.proc.is_alive() and not s.data.poll():
                    self._shard_lost(s, f"exited with code {s.proc.exitcode}")
            if batch:
                self.on_results(batch)
            self._check_steady()
            if self.t_go is None and all(s.warm or s.done for s in self.shards):
                self.t_go = time.perf_counter_ns()
                for s in self.shards:
                    s.send(("go", self.t_go))
            now = time.monotonic()
            if self.on_progress is not None and now - last_progress >= PROGRESS_S:
                last_progress = now
                self.on_progress(self._progress())
        self._account_lost()
        if not any(s.warm for s in self.shards) and self.errors:
            # Never got past start-up (import error, open-file limit, crash): the level did not run.
            raise LoadGenError("load generator failed to start: " + "; ".join(self.errors))
        if self.on_progress is not None:
            self.on_progress(self._progress())
        return self._outcome()

    def _handle(self, s: _ShardHandle, msg: tuple, batch: list[RequestResult]) -> None:
        kind = msg[0]
        if kind == "batch":
            for t in msg[1]:
                r = RequestResult(*t)
                self._mark(r.seq)
                self._count(r)
                batch.append(r)
                if self.tracker is not None and not r.warmup:
                    # a failure without E2E has no recorded end: now (<= one batch late) bounds it from above
                    self.tracker.add(r.user, completion_ns(r) if r.e2e_ms is not None else time.time_ns())
        elif kind == "warm":
            s.warm = True
        elif kind == "done":
            _, s.stats, s.itl, s.t_last_end = msg
            s.done = True
            if s.stats.error:
                self.errors.append(f"shard {s.idx}: {s.stats.error}")
                self._stop_all("a shard failed")
        elif kind == "fatal":
            self.errors.append(f"shard {s.idx}: {msg[1]}")
            self._stop_all("a shard failed")
        elif kind == "stalled":
            if self.stalled is None:
                self.stalled = msg[1]
            self._stop_all("stalled")

    def _mark(self, seq: int) -> None:
        if seq >= len(self.seen):
            self.seen.extend(bytes(max(seq + 1 - len(self.seen), 4096)))
        self.seen[seq] = 1

    def _count(self, r: RequestResult) -> None:
        c = self.c
        if r.warmup:
            c["w_ok" if r.ok else "w_err"] += 1
        elif r.ok:
            c["ok"] += 1
            c["out"] += r.output_tokens or 0
            c["in"] += r.input_tokens or 0
        else:
            c["err"] += 1

    def _stop_all(self, why: str) -> None:
        if not self.stopping:
            self.stopping = True
            for s in self.shards:
                s.send(("stop", why))

    def _shard_lost(self, s: _ShardHandle, why: str) -> None:
        if s.done:
            return
        s.done = True
        self.errors.append(f"load-generator shard {s.idx} {why}")
        self._stop_all("a shard failed")

    def _account_lost(self) -> None:
        """Slots taken by a shard that died before reporting become error results: nothing goes missing."""
        taken = self.counter.value
        missing = [q for q in range(taken) if q >= len(self.seen) or not self.seen[q]]
        if not missing:
            return
        why = "; ".join(self.errors) or "load-generator shard lost"
        now = time.time_ns()
        routes = self.plan.routes()
        lost = [RequestResult(seq=q, warmup=q < self.plan.warmup_requests, send_ns=now, queue_ms=None,
                              ttft_ms=None, e2e_ms=None, input_tokens=None, output_tokens=None, chunks=0,
                              itl_mean_ms=None, itl_max_ms=None, ok=False, status_code=None,
                              error=f"result lost: {why}", instance_id=routes[self.plan.target_of(q)].instance_id)
                for q in missing]
        for r in lost:
            self._mark(r.seq)
            self._count(r)
        self.on_results(lost)

    def _progress(self) -> dict:
        w = self.plan.warmup_requests
        taken = self.counter.value
        c = self.c
        measuring = self.t_go is not None
        return {
            "phase": "measure" if measuring else "warmup",
            "sent": max(0, taken - w),
            "done": c["ok"] + c["err"],
            "ok": c["ok"],
            "err": c["err"],
            "output_tokens": c["out"],
            "elapsed_s": (time.perf_counter_ns() - (self.t_go if measuring else self.t0)) / 1e9,
            "warmup_done": c["w_ok"] + c["w_err"],
            "warmup_total": w,
            "target": self.plan.n_requests,
            "duration_s": self.plan.duration_s,
            "steady_s": self.tracker.steady_s(time.time_ns()) if self.tracker is not None else None,
        }

    def _outcome(self) -> LevelOutcome:
        itl = LogHistogram()
        stats = []
        for s in self.shards:
            if s.itl is not None:
                itl.merge(s.itl)
            stats.append(s.stats or ShardStats(idx=s.idx, users=s.users, error="no report (shard lost)"))
        t_go = self.t_go if self.t_go is not None else time.perf_counter_ns()
        t_end = max([t_go] + [s.t_last_end for s in self.shards])
        c = self.c
        busiest = max((st.cpu_pct for st in stats), default=0.0)
        p = self.plan
        take_until, reason = None, None
        if p.duration_s is not None:
            take_until = t_go + self.wall_off + int(p.duration_s * 1e9)
        elif p.steady_rule:
            if self.drain_ns is not None:
                take_until = self.drain_ns
                reason = (f"steady rule met: {p.min_steady_s:g} s of steady state"
                          + ("" if p.request_rate is not None else f" and {p.min_requests_per_user} requests per user"))
            else:
                take_until = t_go + self.wall_off + int(p.max_level_s * 1e9)
                reason = (f"hard cap: stopped at {p.max_level_s:g} s before reaching {p.min_steady_s:g} s of steady "
                          f"state" + ("" if p.request_rate is not None else
                                      f" and {p.min_requests_per_user} requests per user"))
                if self.stopping:
                    reason = "stopped before the steady rule was met"
        return LevelOutcome(
            results_ok=c["ok"], results_err=c["err"], n_sent=c["ok"] + c["err"],
            start_ns=t_go + self.wall_off, end_ns=t_end + self.wall_off, duration_s=(t_end - t_go) / 1e9,
            itl=itl, client_cpu_pct=busiest, client_bound=busiest > CLIENT_BOUND_PCT,
            cancelled=self.stop is not None and self.stop.is_set(),
            warmup_sent=c["w_ok"] + c["w_err"], warmup_ok=c["w_ok"], warmup_err=c["w_err"],
            input_tokens=c["in"], output_tokens=c["out"], procs=len(self.shards),
            client_cpu_s=sum(st.cpu_s for st in stats), shards=stats,
            error="; ".join(self.errors) or None, stalled=self.stalled,
            concurrency=p.concurrency, request_rate=p.request_rate, ramp_s=p.ramp_s,
            take_until_ns=take_until, stop_reason=reason,
        )


# ================================================================================================
# Shard side (runs in a spawned process)
# ================================================================================================

def _shard_main(idx: int, offset: int, users: int, plan: LevelPlan, counter, last_rx, cmd: Connection,
                data: Connection) -> None:
    # Ctrl-C in a terminal hits the whole process group: let the parent decide (it sends "stop").
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out: queue.SimpleQueue = queue.SimpleQueue()
    sender = threading.Thread(target=_sender, args=(out, data), daemon=True)
    sender.start()
    try:
        raise_nofile(users + FD_HEADROOM)
        import uvloop
        uvloop.run(_Shard(idx, offset, users, plan, counter, last_rx, cmd, out).main())
    except BaseException:  # noqa: BLE001 - report anything, the parent accounts for the requests
        out.put(("fatal", traceback.format_exc(limit=8)))
    out.put(None)
    sender.join(timeout=30)


def _sender(out: queue.SimpleQueue, data: Connection) -> None:
    """Owns the pipe to the parent so a slow reader blocks this thread, never the event loop."""
    while True:
        msg = out.get()
        if msg is None:
            break
        try:
            data.send_bytes(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))
        except (BrokenPipeError, OSError):
            break  # parent gone


class _Shard:
    def __init__(self, idx: int, offset: int, users: int, plan: LevelPlan, counter, last_rx, cmd: Connection,
                 out: queue.SimpleQueue):
        self.idx, self.n_users, self.plan, self.counter, self.cmd, self.out = idx, users, plan, counter, cmd, out
        self.offset = offset            # global index of this shard's first user
        self.draining = False           # the parent said "drain": take no new request, finish the in-flight ones
        self.t_go = 0
        self.last_rx_all = last_rx     # shared: every shard's last byte from the server (perf_counter ns)
        self.last_rx = 0               # this shard's, published by _watchdog
        self.lock = counter.get_lock()
        self.wall_off = time.time_ns() - time.perf_counter_ns()
        self.pending: list[tuple] = []
        self.gaps = array("q")          # ITL gaps of finished OK measured requests, not yet in the histogram
        self.zero_gaps = 0              # ... and the 0 gaps (chunks that arrived in the same read)
        self.itl = LogHistogram()
        self.stopping = False
        self.stop_reason = ""
        self.user_tasks: list[asyncio.Task] = []
        self.t_last_end = 0
        self.deadline: int | None = None
        self.next_arrival = 0
        self.lag_ns: list[int] = []
        self.arrivals_rng = random.Random(f"melt-arrivals-{plan.seed}-{idx}")
        self.peak_cpu = 0.0
        self.timeout_ns = int(plan.timeout_s * 1e9)
        self.stall_ns = int(plan.stall_timeout_s * 1e9) if plan.stall_timeout_s else None
        self.watchdog_period = 1.0      # set by _watchdog
        self.inflight: dict[asyncio.Task, tuple[int, int]] = {}  # request task -> (send, deadline), perf_counter ns
        self.stale_retries = 0
        self.expired: dict[asyncio.Task, str] = {}  # tasks the watchdog cancelled -> their error (timeout, stalled)

    # -- control -------------------------------------------------------------------------------------
    def _on_cmd(self) -> None:
        try:
            msg = self.cmd.recv()
        except (EOFError, OSError):
            msg = ("stop", "parent went away")
        if msg[0] == "go" and not self.go.done():
            self.go.set_result(msg[1])
        elif msg[0] == "drain":
            self.draining = True
        elif msg[0] == "stop":
            if msg[1] == "stalled":  # another shard saw the server go silent: ours got nothing from it either
                self._expire_stalled(time.perf_counter_ns(), everyone=True)
            self._stop_users(msg[1])

    def _stop_users(self, reason: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.stop_reason = reason
        asyncio.get_running_loop().remove_reader(self.cmd.fileno())
        for t in self.user_tasks:
            t.cancel()
        if not self.go.done():
            self.go.set_result(None)

    async def main(self) -> None:
        import aiohttp
        import numpy as np
        import yarl

        from bench.prompts import PromptMaker

        self.np, self.aiohttp = np, aiohttp
        p = self.plan
        # One target per engine instance (one for a single-engine run); a prompt maker per distinct tokenizer, each
        # loaded once per shard. self.prompts (the first) answers the level-wide questions (trace arrivals).
        targets = p.routes()
        self.route = (p.route or route_table(tuple(t.weight for t in targets))) if len(targets) > 1 else None
        path = "/v1/completions" if p.endpoint == "completions" else "/v1/chat/completions"
        self.urls = [yarl.URL(t.base_url.rstrip("/") + path) for t in targets]
        self.models = [t.model for t in targets]
        self.iids = [t.instance_id for t in targets]
        self.shares = [t.weight / sum(x.weight for x in targets) for t in targets]
        by_tok: dict[tuple, PromptMaker] = {}
        for t in targets:
            key = (t.tokenizer_path, t.vocab_size)
            if key not in by_tok:
                by_tok[key] = PromptMaker.for_plan(p.for_target(t) if p.targets else p)
        self.makers = [by_tok[(t.tokenizer_path, t.vocab_size)] for t in targets]
        self.distinct_makers = list(by_tok.values())
        self.prompts = self.makers[0]
        self.url = self.urls[0]
        loop = asyncio.get_running_loop()
        self.go: asyncio.Future = loop.create_future()
        loop.add_reader(self.cmd.fileno(), self._on_cmd)
        self.headers = {"Content-Type": "application/json"}
        if p.api_key:
            self.headers["Authorization"] = f"Bearer {p.api_key}"
        # ssl=False for plain http skips building a default SSL context (~50 ms of CPU per shard).
        connector = _paced_connector(aiohttp)(limit=self.n_users + 8 + len(targets), limit_per_host=0,
                                              force_close=False,
                                              keepalive_timeout=120, ttl_dns_cache=None,
                                              ssl=False if self.url.scheme == "http" else True)
        self.session = aiohttp.ClientSession(
            # No aiohttp timers: they cost a timer per request and a context per read. _watchdog enforces
            # timeout_s for every request instead.
            connector=connector, timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_read=None,
                                                              sock_connect=None),
            cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False, trust_env=False)
        # Failures of a reused connection that the server closed; a refused connect is not one of them.
        self.stale_errors = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
        self.retry_session = None
        self.connect_error = aiohttp.ClientConnectorError
        flusher = asyncio.ensure_future(self._flusher())
        watchdog = asyncio.ensure_future(self._watchdog())
        try:
            # Text prompts cost milliseconds each: make them before "go" (every shard may take any request, so each
            # makes all of them), and for levels of unknown length keep a thread ahead of the shared counter.
            total = p.warmup_requests + p.n_requests if p.n_requests is not None else None
            cap = max(p.concurrency, min(PREFETCH_MAX, PREFETCH_BYTES // (8 * (p.input_len.max + p.prefix_len))))
            first = min(total if total is not None else p.warmup_requests + p.concurrency, cap)
            for m in self.distinct_makers:  # each maker makes only the prompts of the requests routed to it
                mine = self._mine(m)
                await loop.run_in_executor(None, m.prefetch, [q for q in range(first) if mine is None or mine(q)])
                if total is None or total > first:
                    m.run_ahead(lambda: self.counter.value, max(p.concurrency, 64), mine)
            await self._phase(p.warmup_requests, warm=True)
            if p.preconnect:
                await self._preconnect()
            self.out.put(("warm",))
            t_go = await self.go
            stats = ShardStats(idx=self.idx, users=self.n_users)
            if t_go is not None and not self.stopping:
                self.t_go = t_go
                horizon = p.duration_s if p.duration_s is not None else (p.max_level_s if p.steady_rule else None)
                if horizon is not None:
                    self.deadline = t_go + int(horizon * 1e9)
                limit = p.warmup_requests + p.n_requests if p.n_requests is not None else 1 << 62
                if self.prompts.arrivals is not None and self.deadline is not None:
                    # a trace in a time-bound level: only the requests that arrive before the level's end are taken
                    limit = min(limit, p.warmup_requests + self.prompts.arrivals_before((self.deadline - t_go) / 1e9))
                self.next_arrival = t_go
                self.t_last_end = t_go
                # Full (gen2) collections walk every live object: at 10k users that is 100s of ms of stalled
                # loop each time, several times a level, and they find nothing (streams make no cycles that
                # outlive the young generations). A shard lives for one level: freeze what exists now and
                # leave full collections off; young collections still run.
                gc.freeze()
                gc.set_threshold(gc.get_threshold()[0], gc.get_threshold()[1], 1 << 30)
                ru0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter_ns()
                opened0 = self.session.connector.opened
                monitor = asyncio.ensure_future(self._monitor())
                await self._phase(limit, warm=False)
                monitor.cancel()
                ru1, w1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter_ns()
                stats.cpu_s = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
                stats.wall_s = (w1 - w0) / 1e9
                stats.cpu_pct = 100 * stats.cpu_s / stats.wall_s if stats.wall_s > 0 else 0.0
                stats.peak_cpu_pct = max(self.peak_cpu, stats.cpu_pct)
                if self.lag_ns:
                    stats.loop_lag_mean_ms = sum(self.lag_ns) / len(self.lag_ns) / 1e6
                    stats.loop_lag_max_ms = max(self.lag_ns) / 1e6
                stats.stale_retries = self.stale_retries
                stats.new_connections = (self.session.connector.opened - opened0
                                         + (self.retry_session.connector.opened if self.retry_session else 0))
                stats.prompts_inexact = sum(m.n_inexact for m in self.distinct_makers)
                stats.prompts_inline = sum(m.n_inline for m in self.distinct_makers)
        finally:
            flusher.cancel()
            for m in self.distinct_makers:
                m.close()
            watchdog.cancel()
            loop.remove_reader(self.cmd.fileno())
            self._flush()
            await self.session.close()
            if self.retry_session is not None:
                await self.retry_session.close()
        self.out.put(("done", stats, self.itl, self.t_last_end))

    def _mine(self, maker) -> Callable[[int], bool] | None:
        """Which request seqs `maker` makes prompts for (None: all of them, the one-tokenizer case)."""
        if len(self.distinct_makers) == 1:
            return None
        idx = {i for i, m in enumerate(self.makers) if m is maker}
        route = self.route
        return lambda q: route[q % ROUTE_CYCLE] in idx

    async def _preconnect(self) -> None:
        """Open one keep-alive connection per user before the measured phase.

        Every user sends GET /v1/models at once, so the pool is empty when each asks the connector for a
        connection and each gets a new one (aiohttp returns a connection to the pool as soon as a small response
        has been read, so sending them in batches would reuse the first batch's connections and leave the rest of
        the users to connect at "go", into the accept queue of a server that is already busy with the others:
        seconds of TTFT that the server never caused, seen on an H100 at 512 and 1,024 users). The connects
        themselves are paced by _paced_connector: thousands in the same millisecond overflow the server's accept
        queue (somaxconn; uvicorn's backlog is 2048), and dropped SYNs are retried after 1, 3, 7 s.
        Failures are ignored here: the measured requests report any real problem.
        """
        # one connection per user, shared out over the targets by their weights (at least one each)
        urls = [u.with_path("/v1/models") for u in self.urls]
        per = [max(1, math.ceil(self.n_users * sh)) if sh > 0 else 0 for sh in self.shares]
        plan_urls = [u for u, n in zip(urls, per) for _ in range(n)]
        headers = {k: v for k, v in self.headers.items() if k == "Authorization"}
        # a server that accepts and never answers costs at most the stall timeout here, as it would a request
        timeout = self.aiohttp.ClientTimeout(total=min(PRECONNECT_TIMEOUT_S, self.plan.stall_timeout_s or 1e9))
        failed = False  # best effort: after one failure nobody tries again (a dead server costs one timeout)

        async def one(url) -> None:
            nonlocal failed
            if failed or self.stopping:
                return
            try:
                async with self.session.get(url, headers=headers, timeout=timeout, allow_redirects=False) as resp:
                    await resp.read()
            except Exception:  # noqa: BLE001
                failed = True

        # Registered as user tasks so that a stop cancels them like any request.
        await self._run_users([one(u) for u in plan_urls])

    async def _run_users(self, coros: list) -> None:
        if self.stopping:
            for c in coros:
                c.close()
            return
        self.user_tasks = [asyncio.ensure_future(c) for c in coros]
        await asyncio.gather(*self.user_tasks, return_exceptions=True)
        self.user_tasks = []

    async def _phase(self, limit: int, warm: bool) -> None:
        await self._run_users([self._user(limit, warm, self.offset + i) for i in range(self.n_users)])

    def _take(self, limit: int) -> int | None:
        if self.draining:
            return None
        with self.lock:
            v = self.counter.value
            if v >= limit:
                return None
            self.counter.value = v + 1
        return v

    async def _user(self, limit: int, warm: bool, user: int) -> None:
        p = self.plan
        poisson = p.request_rate is not None and not warm
        if poisson:
            rng = self.arrivals_rng
            # This shard's share of the rate (a split Poisson process is Poisson). Gamma (burstiness B != 1):
            # shape B, mean 1/rate, as vllm bench serve; with several shards each runs its own gamma process at its
            # share, and their sum is burstier than Poisson but less so than one gamma process at the full rate.
            rate = p.request_rate * self.n_users / p.concurrency
            shape = p.burstiness
            gamma = shape != 1.0
            scale = 1.0 / (rate * shape)
        due = time.perf_counter_ns()
        trace = None if warm else self.prompts.arrivals
        if not warm and not poisson and trace is None and p.ramp_s > 0 and user:
            # Ramp-up: this user's first measured request at go + g * ramp / C (never past the deadline).
            due = self.t_go + int(user * p.ramp_s * 1e9) // p.concurrency
            if self.deadline is not None and due >= self.deadline:
                return
            delay = due - time.perf_counter_ns()
            if delay > 0:
                await asyncio.sleep(delay / 1e9)
        while not self.stopping:
            if self.deadline is not None and time.perf_counter_ns() >= self.deadline:
                return
            if poisson:
                # Shard-wide Poisson schedule at this shard's share of the rate; a busy user makes the
                # next arrival wait, which shows up as queue time (the rate is capped by concurrency).
                due = self.next_arrival
                self.next_arrival += int((rng.gammavariate(shape, scale) if gamma else rng.expovariate(rate)) * 1e9)
                delay = due - time.perf_counter_ns()
                if delay > 0:
                    await asyncio.sleep(delay / 1e9)
                if self.deadline is not None and time.perf_counter_ns() >= self.deadline:
                    return
            seq = self._take(limit)
            if seq is None:
                return
            if trace is not None:  # trace replay: this request arrives at its row's offset after "go"
                due = self.t_go + int(self.prompts.arrival_s(seq - p.warmup_requests) * 1e9)
                delay = due - time.perf_counter_ns()
                if delay > 0:
                    try:
                        await asyncio.sleep(delay / 1e9)
                    except asyncio.CancelledError:  # stopped while it waited: taken, so it gets its result
                        now = time.perf_counter_ns()
                        self._record(seq, warm, now, now, None, "cancelled", SSEStream(), None, user,
                                     self.route[seq % ROUTE_CYCLE] if self.route else 0)
                        raise
            due = await self._request(seq, warm, due, user)

    # -- the hot path --------------------------------------------------------------------------------
    async def _request(self, seq: int, warm: bool, due_ns: int, user: int) -> int:
        p = self.plan
        tgt = self.route[seq % ROUTE_CYCLE] if self.route is not None else 0  # the client-side balancer
        prompt, max_tokens = self.makers[tgt].request(seq)  # text, or token ids as an int32 array
        if p.endpoint == "completions":
            payload = {"model": self.models[tgt], "prompt": prompt, "max_tokens": max_tokens}
        else:
            payload = {"model": self.models[tgt], "messages": [{"role": "user", "content": prompt}],
                       "max_completion_tokens": max_tokens}
        # Fixed output length: max_tokens + ignore_eos, exactly what `vllm bench serve` sends. Not min_tokens: with
        # ignore_eos it changes nothing about the length, but vLLM then runs a min-tokens logits processor every step,
        # which measured ~10% slower decode at concurrency 16 on an H100 (docs/PERFORMANCE.md).
        payload["ignore_eos"] = True
        finish_mode = p.stream_usage == "finish-length"
        if finish_mode:
            payload["min_tokens"] = max_tokens
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
        body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)

        sse = SSEStream()
        if finish_mode:
            sse.want_finish, sse.known_in = True, self.prompts.last_in_tokens
        feed = sse.feed
        status = err = None
        task = asyncio.current_task()
        t_send = time.perf_counter_ns()
        self.inflight[task] = (t_send, t_send + self.timeout_ns)
        try:
            for attempt in (0, 1):
                try:
                    # a redirect is an answer (counted as HTTP 3xx), never a reason to send load elsewhere; the
                    # re-send goes over a new connection (another pooled one may be just as stale)
                    session = self.session if not attempt else self._fresh_session()
                    async with session.post(self.urls[tgt], data=body, headers=self.headers,
                                            allow_redirects=False) as resp:
                        self.last_rx = time.perf_counter_ns()  # the status line and headers are bytes too
                        status = resp.status
                        if status != 200:
                            text = (await resp.content.read(2000)).decode("utf-8", "replace").strip()
                            err = (f"HTTP {status}: {text[:300]}" if text
                                   else f"HTTP {status} {resp.reason or ''}".strip())
                        else:
                            readany = resp.content.readany
                            while sse.err is None:
                                data = await readany()
                                if not data:
                                    break
                                t = time.perf_counter_ns()  # one clock read per socket read
                                feed(data, t)
                                self.last_rx = t
                            err = sse.finish()
                    break
                except self.stale_errors as e:
                    # A keep-alive connection the server closed while idle (vLLM's uvicorn: after 5 s) fails
                    # at the write or before any response byte, and the server never read the request: it is
                    # re-sent once on a fresh connection (RFC 9112 9.3.1). Its TTFT keeps counting from the
                    # first send. A server that died instead fails the re-send too, which is then counted as
                    # an error; so is anything after a response started.
                    if (attempt or status is not None or sse.chunks or isinstance(e, self.connect_error)
                            or _partial_response(e)):
                        raise
                    self.stale_retries += 1
        except asyncio.CancelledError:
            if task not in self.expired:
                self._record(seq, warm, due_ns, t_send, status, "cancelled", sse, max_tokens, user, tgt)
                raise
            err = self.expired.pop(task)
            task.uncancel()  # our own timeout, not a stop: the user goes on (after a stall the stop ends it)
            if self.stopping:
                return self._record(seq, warm, due_ns, t_send, status, err, sse, max_tokens, user, tgt)
        except asyncio.TimeoutError:
            err = f"timeout after {p.timeout_s:g}s"
        except orjson.JSONDecodeError as e:
            err = f"bad JSON in SSE event: {e}"[:500]
        except self.stale_errors as e:
            err = (f"partial HTTP response: the server closed the connection inside the response head "
                   f"({_partial_response(e)[:200]})" if _partial_response(e) else f"{type(e).__name__}: {e}"[:500])
        except Exception as e:  # noqa: BLE001 - every failure becomes a counted error, with its cause
            err = f"{type(e).__name__}: {e}"[:500]
        finally:
            self.inflight.pop(task, None)
        return self._record(seq, warm, due_ns, t_send, status, err, sse, max_tokens, user, tgt)

    def _fresh_session(self):
        """A session whose every request opens its own connection (force_close), for the one re-send of a request
        whose pooled connection the server had closed: re-sent over the pool it could land on another stale one."""
        if self.retry_session is None:
            aiohttp = self.aiohttp
            self.retry_session = aiohttp.ClientSession(
                connector=_paced_connector(aiohttp)(force_close=True, limit=0, ttl_dns_cache=None,
                                                    ssl=False if self.url.scheme == "http" else True),
                timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_read=None, sock_connect=None),
                cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False, trust_env=False)
        return self.retry_session

    def _record(self, seq: int, warm: bool, due_ns: int, t_send: int, status: int | None, err: str | None,
                sse: "SSEStream", max_tokens: int, user: int, tgt: int = 0) -> int:
        chunks, t_first, t_last = sse.chunks, sse.t_first, sse.t_last
        # a request that failed ends when it failed (a stream that stalled and timed out included), not at its
        # last chunk: the level lasts until every request is done, as in vllm bench serve
        t_end = t_last if chunks and err is None else time.perf_counter_ns()
        ok = err is None
        in_tok = out_tok = None
        usage = sse.usage
        if isinstance(usage, dict):
            in_tok, out_tok = usage.get("prompt_tokens"), usage.get("completion_tokens")
            in_tok = in_tok if isinstance(in_tok, int) else None
            out_tok = out_tok if isinstance(out_tok, int) else None
        elif ok and sse.want_finish and sse.finish_length:  # stream_usage "finish-length" (LevelPlan)
            in_tok, out_tok = sse.known_in, max_tokens
        self.pending.append((
            # queue >= 0: the loop's timers may fire up to ~1 ms early, which is not queueing
            seq, warm, t_send + self.wall_off, max(0, t_send - due_ns) / 1e6,
            (t_first - t_send) / 1e6 if chunks else None,
            (t_last - t_send) / 1e6 if chunks else None,
            in_tok, out_tok, chunks,
            (t_last - t_first) / (chunks - 1) / 1e6 if chunks > 1 else None,
            sse.itl_max / 1e6 if chunks > 1 else None,
            ok, status, err, max_tokens, user, self.iids[tgt],
        ))
        if not warm:
            if ok:
                self.gaps.extend(sse.gaps)
                self.zero_gaps += sse.zero_gaps
            if t_end > self.t_last_end:
                self.t_last_end = t_end
        return time.perf_counter_ns()

    # -- background ----------------------------------------------------------------------------------
    def _flush(self) -> None:
        if self.gaps:
            self.itl.add_many(self.np.frombuffer(self.gaps, dtype=self.np.int64))
            self.gaps = array("q")
        if self.zero_gaps:
            self.itl.add_zeros(self.zero_gaps)
            self.zero_gaps = 0
        if self.pending:
            batch, self.pending = self.pending, []
            self.out.put(("batch", batch))

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(BATCH_S)
            self._flush()

    async def _watchdog(self) -> None:
        """Every min(1 s, timeout/10, stall/10): cancels requests older than timeout_s, and, when the whole server
        has been silent for stall_timeout_s, the requests that waited that long (see the module docstring);
        _request turns each cancellation into its error ("timeout after ...", "stalled: ...")."""
        period = self.watchdog_period = min(1.0, self.plan.timeout_s / 10, (self.plan.stall_timeout_s or 10) / 10)
        while True:
            await asyncio.sleep(period)
            now = time.perf_counter_ns()
            for task, (_, deadline) in list(self.inflight.items()):
                if now >= deadline and task not in self.expired:
                    self.expired[task] = f"timeout after {self.plan.timeout_s:g}s"
                    task.cancel()
            if self._expire_stalled(now):
                # the level stops for the silent server: what is still in flight (sent later, so not yet a full
                # stall timeout old) got nothing from it either, and is stalled too, not "cancelled" by a user
                self._expire_stalled(now, everyone=True)
                self.out.put(("stalled", self.stall_error))
                self._stop_users("stalled")

    @property
    def stall_error(self) -> str:
        return (f"stalled: no byte from the server for {self.plan.stall_timeout_s:g}s "
                f"while requests were in flight")

    def _expire_stalled(self, now: int, everyone: bool = False) -> int:
        """Cancel (as stalled) every in-flight request that has waited stall_timeout_s since the server's last
        byte to any shard (or since its own send, if later); returns how many. Other shards publish their last byte
        once per watchdog period, so up to a period late: waiting one period more than the stall timeout means
        the server really was silent that long. `everyone`: the stall is declared, the level stops; every request
        still in flight is stalled, however recently it was sent."""
        if self.stall_ns is None:
            return 0
        self.last_rx_all[self.idx] = self.last_rx
        last = max(self.last_rx_all)
        limit = self.stall_ns + int(self.watchdog_period * 1e9)
        n = 0
        for task, (t_send, _) in list(self.inflight.items()):
            if task not in self.expired and (everyone or now - max(t_send, last) >= limit):
                self.expired[task] = self.stall_error
                task.cancel()
                n += 1
        return n

    async def _monitor(self) -> None:
        """Event-loop lag every 100 ms and CPU % per ~1 s window (peak); cheap enough to always run."""
        tick = 100_000_000
        ru_prev, w_prev = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter_ns()
        n = 0
        while True:
            t0 = time.perf_counter_ns()
            await asyncio.sleep(tick / 1e9)
            self.lag_ns.append(max(0, time.perf_counter_ns() - t0 - tick))
            n += 1
            if n % 10 == 0:
                ru, w = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter_ns()
                cpu = (ru.ru_utime + ru.ru_stime) - (ru_prev.ru_utime + ru_prev.ru_stime)
                self.peak_cpu = max(self.peak_cpu, 100 * cpu / ((w - w_prev) / 1e9))
                ru_prev, w_prev = ru, w


def _partial_response(e: BaseException) -> str | None:
    """aiohttp's ServerDisconnectedError carries the response head parsed so far when the server closed the connection
    inside it (a partial HTTP response): the server had answered, so the request must not be re-sent as if it had
    met a closed keep-alive connection. Returns the status line seen, else None."""
    msg = getattr(e, "message", None)
    if type(e).__name__ != "ServerDisconnectedError" or msg is None or isinstance(msg, str):
        return None
    return f"HTTP {getattr(msg, 'code', '?')} {getattr(msg, 'reason', '')}".strip()


class SSEStream:
    """Incremental parser of one OpenAI-style SSE response: content chunks, their timing, usage, errors.

    feed(data, t) takes the bytes of one socket read and the one clock reading taken for it; every event
    completed by that read is stamped t. A content chunk is an event whose `choices` is non-empty (vLLM's
    definition); the ITL gap of the first chunk of a read is t - previous chunk, the others get 0 (kept as
    a count, `zero_gaps`, not as array entries).

    Fast path: when every event completed by a read (up to the first usage object) is one compact
    `data: {...}` line whose `choices` array opens with an object, all of them are content chunks and are
    counted with a few C-level byte scans instead of one JSON parse each (a `"` can't appear unescaped
    inside a JSON string, so `"choices":[{` and `"usage":{` are structural). Anything else (usage, error
    events, [DONE], comments, multi-line events, pretty-printed JSON) goes through orjson event by event.
    Both paths give identical results (tests/integration/test_loadgen_sse.py).
    """

    __slots__ = ("buf", "chunks", "t_first", "t_last", "itl_max", "gaps", "zero_gaps", "usage", "done", "err",
                 "fast", "want_finish", "finish_length", "known_in")

    def __init__(self, fast: bool = True) -> None:
        self.buf = b""
        self.chunks = 0
        self.t_first = 0
        self.t_last = 0
        self.itl_max = 0
        self.gaps = array("q")      # non-zero gaps between content chunks, ns
        self.zero_gaps = 0
        self.usage = None           # the last usage object seen
        self.done = False           # saw data: [DONE]
        self.err: str | None = None
        self.fast = fast
        self.want_finish = False    # LevelPlan.stream_usage "finish-length": look for finish_reason "length"
        self.finish_length = False
        self.known_in: int | None = None

    def _content(self, k: int, t: int) -> None:
        """k content chunks arrived in one read at time t."""
        if self.chunks:
            gap = t - self.t_last
            if gap:
                self.gaps.append(gap)
                if gap > self.itl_max:
                    self.itl_max = gap
            else:
                self.zero_gaps += 1
            self.zero_gaps += k - 1
        else:
            self.t_first = t
            self.zero_gaps += k - 1
        self.t_last = t
        self.chunks += k

    def feed(self, data: bytes, t: int) -> None:
        if self.buf:
            if len(self.buf) > MAX_SSE_EVENT:
                # a server sending one endless line would otherwise grow this buffer (and the copies) without end
                self.err = f"oversized SSE event: more than {MAX_SSE_EVENT >> 20} MiB without an event end"
                return
            data = self.buf + data
        if b"\r" in data:                 # SSE allows CRLF; the big engines send LF only
            data = data.replace(b"\r\n", b"\n")
        end = data.rfind(b"\n\n")
        if end < 0:
            self.buf = data
            return
        self.buf = data[end + 2:]
        block = data[:end]                 # complete events joined by blank lines
        if self.want_finish and (b'"finish_reason": "length"' in block or b'"finish_reason":"length"' in block):
            self.finish_length = True
        if self.fast:
            # Only a usage object needs reading from a content event, so the one marker searched for is
            # usage; errors, [DONE] and comments lack `"choices":[{` and so fail the count in _fast. The
            # events before the first usage (all of them, except in a stream's last read) take the fast
            # path; the rest is parsed event by event.
            cut = block.find(b'"usage":{')
            if cut < 0:
                if self._fast(block, t):
                    return
            else:
                head_end = block.rfind(b"\n\n", 0, cut)
                if head_end >= 0 and self._fast(block[:head_end], t):
                    block = block[head_end + 2:]
        for ev in block.split(b"\n\n"):
            self._event(ev, t)
            if self.err is not None:
                return

    def _fast(self, head: bytes, t: int) -> bool:
        """Count `head` (events without usage) if every event in it is one compact `data: {...}` line with
        a non-empty `choices`; False (nothing counted) if any is not."""
        seps = head.count(b"}\n\ndata: {")
        if (head.startswith(b"data: {") and head.endswith(b"}") and head.count(b"\n") == 2 * seps
                and head.count(b'"choices":[{') == seps + 1):
            self._content(seps + 1, t)
            return True
        return False

    def _event(self, ev: bytes, t: int) -> None:
        if ev[:6] == b"data: " and b"\n" not in ev:
            payload = ev[6:]
        else:  # comments, event:/id: fields, multi-line data
            lines = [ln[5:].removeprefix(b" ") for ln in ev.strip(b"\n").split(b"\n") if ln.startswith(b"data:")]
            if not lines:
                return
            payload = b"\n".join(lines)
        if payload.strip() == b"[DONE]":
            self.done = True
            return
        obj = orjson.loads(payload)
        if obj.__class__ is not dict:
            self.err = f"unexpected SSE payload: {payload[:200]!r}"
            return
        if obj.get("choices"):
            self._content(1, t)
        u = obj.get("usage")
        if u:
            self.usage = u
        elif "error" in obj or obj.get("object") == "error":
            e = obj.get("error", obj)
            msg = e.get("message", e) if isinstance(e, dict) else e
            self.err = f"server error event: {str(msg)[:300]}"

    def finish(self) -> str | None:
        """After the response body ended: the request's error, or None if it is a valid, complete stream."""
        if self.err is None and self.buf.strip():
            self._event(self.buf.strip(b"\n"), self.t_last)  # a last event without its blank line
            self.buf = b""
        if self.err is not None:
            return self.err
        if not self.done:
            return "stream ended before [DONE] (server closed the connection mid-stream)"
        if self.chunks == 0:
            return "no content chunk received"
        if not isinstance(self.usage, dict) or not isinstance(self.usage.get("completion_tokens"), int):
            if self.want_finish:
                return None if self.finish_length else (
                    "server sent no usage and its stream did not end at max_tokens (finish_reason not 'length')")
            return "server sent no usage (stream_options.include_usage unsupported?)"
        return None

