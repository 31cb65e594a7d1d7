"""Continuous-batching scheduler of the simulator, modelled on vLLM V1. Pure logic: time is passed in, never read,
except through the injectable `clock` used to stamp arrivals; so tests and the calibration run it in virtual time.

One engine step (vLLM V1 semantics):
  1. requests whose frontend latency has elapsed move from `pending` (HTTP, tokenization, IPC) to `waiting`;
  2. running requests first, in admission order, each gets the tokens it still needs (1 for a decode, a chunk for a
     prefill or a recompute) out of the step's token budget (`max_num_batched_tokens`: chunked prefill);
     KV blocks are allocated for those tokens, and when the cache is full the most recently admitted running
     request is preempted (recompute mode: its blocks are freed, it goes back to the head of the waiting queue and
     later recomputes prompt + tokens generated so far);
  3. if nothing was preempted, waiting requests are admitted in FIFO order while the budget, `max_num_seqs` and free
     blocks allow (the head blocks the queue, like vLLM's FCFS policy);
  4. at the end of the step, every request whose computed tokens caught up with its known tokens samples one token.
     Its first token ends its TTFT. A request finishes after exactly max_tokens output tokens: the simulator has
     no EOS, so it behaves as if ignore_eos were always set (min_tokens is therefore always honoured).
"""
from __future__ import annotations

import heapq
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from engines.sim.host import ApiServer, HostProfile
from engines.sim.model import PerfModel, StepCost, StepLoad


@dataclass(slots=True, eq=False)
class SimRequest:
    rid: str
    prompt_tokens: int
    max_tokens: int
    arrival: float = -1.0          # when the server received it; stamped by Scheduler.add when negative
    min_tokens: int = 0
    owner: Any = None              # the server's stream handle; the scheduler never touches it
    # -- scheduler state
    ready: float = 0.0             # arrival + frontend latency: when the engine core sees it
    num_computed: int = 0          # tokens whose KV is in the cache
    num_output: int = 0
    num_blocks: int = 0
    first_token_time: float | None = None
    last_token_time: float | None = None
    finish_time: float | None = None
    preemptions: int = 0
    finished: bool = False
    aborted: bool = False
    visible: int = 0               # output tokens the API server has framed (engines/sim/host.py; server only)

    @property
    def num_tokens(self) -> int:
        return self.prompt_tokens + self.num_output


@dataclass(slots=True)
class Step:
    start: float
    end: float
    cost: StepCost
    entries: list[tuple[SimRequest, int]]


@dataclass(slots=True)
class StepResult:
    step: Step
    sampled: list[SimRequest]          # got exactly one new token at step.end
    first_tokens: list[SimRequest]     # subset of sampled: this was their first token
    finished: list[SimRequest]
    itl_groups: dict[float, int]       # inter-token gap (s) -> how many tokens had it


@dataclass(slots=True)
class SchedulerStats:
    prompt_tokens: int = 0             # counted when a request's prefill completes (as vLLM does)
    generation_tokens: int = 0
    preemptions: int = 0
    finished: int = 0
    aborted: int = 0
    steps: int = 0
    busy_s: float = 0.0                # sum of step durations
    bytes_moved: float = 0.0
    flops: float = 0.0


class VirtualClock:
    """A clock that only moves when told to: `clock.now = t`."""

    def __init__(self, start: float = 0.0):
        self.now = start

    def __call__(self) -> float:
        return self.now


class Scheduler:
    def __init__(self, perf: PerfModel, clock: Callable[[], float] = time.monotonic,
                 frontend_latency_s: float | None = None):
        self.perf = perf
        self.clock = clock
        self.frontend_latency_s = perf.profile.frontend_latency_s if frontend_latency_s is None else frontend_latency_s
        self.max_num_seqs = perf.max_num_seqs
        self.budget_tokens = perf.max_num_batched_tokens
        self.block_size = perf.block_size
        self.num_blocks = perf.num_blocks
        self.free_blocks = perf.num_blocks
        # in the frontend: a heap of (ready time, arrival order, request). Ready times come out of order when a text
        # prompt's tokenization (off the API core) holds one request while token-id ones behind it go on.
        self.pending: list[tuple[float, int, SimRequest]] = []
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self.stats = SchedulerStats()
        self._seq = 0

    # -- queue management

    def add(self, req: SimRequest, after: float | None = None) -> SimRequest:
        """`after`: when the request left the API server's queue (engines/sim/host.py); default: its arrival."""
        if req.arrival < 0:
            req.arrival = self.clock()
        start = req.arrival if after is None else after
        req.ready = start + self.frontend_latency_s
        heapq.heappush(self.pending, (req.ready, self._seq, req))
        self._seq += 1
        return req

    def abort(self, req: SimRequest) -> None:
        """Client went away: drop the request wherever it is and free its KV blocks."""
        if req.finished or req.aborted:
            return
        req.aborted = True
        self.stats.aborted += 1
        self.free_blocks += req.num_blocks
        req.num_blocks = 0
        for q in (self.running, self.waiting):
            try:
                q.remove(req)
                return
            except ValueError:
                continue
        for i, entry in enumerate(self.pending):
            if entry[2] is req:
                self.pending[i] = self.pending[-1]
                self.pending.pop()
                heapq.heapify(self.pending)
                return

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        """Waiting in the engine plus still in the frontend: what a client would call queued."""
        return len(self.waiting) + len(self.pending)

    @property
    def kv_usage(self) -> float:
        return (self.num_blocks - self.free_blocks) / self.num_blocks if self.num_blocks else 0.0

    def has_work(self) -> bool:
        return bool(self.running or self.waiting or self.pending)

    def next_ready_time(self) -> float | None:
        """When the engine could next do something if it is idle now (None: nothing queued at all)."""
        if self.running or self.waiting:
            return float("-inf")
        return self.pending[0][0] if self.pending else None

    # -- one step

    def _blocks(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def _preempt_last(self) -> SimRequest:
        victim = self.running.pop()
        self.free_blocks += victim.num_blocks
        victim.num_blocks = 0
        victim.num_computed = 0
        victim.preemptions += 1
        self.stats.preemptions += 1
        self.waiting.appendleft(victim)
        return victim

    def schedule(self, t: float) -> Step | None:
        """Pack the step that starts at `t`; None when nothing can run (idle)."""
        pending = self.pending
        while pending and pending[0][0] <= t:
            self.waiting.append(heapq.heappop(pending)[2])

        budget = self.budget_tokens
        entries: list[tuple[SimRequest, int]] = []
        preempted = False
        running = self.running
        i = 0
        while i < len(running) and budget > 0:
            req = running[i]
            n = req.prompt_tokens + req.num_output - req.num_computed
            if n > budget:
                n = budget
            need = self._blocks(req.num_computed + n) - req.num_blocks
            self_preempted = False
            while need > self.free_blocks:
                # Victims come off the end, so everything admitted after `req` goes before `req` itself does.
                victim = self._preempt_last()
                preempted = True
                if victim is req:
                    self_preempted = True
                    break
            if self_preempted:
                break
            self.free_blocks -= need
            req.num_blocks += need
            entries.append((req, n))
            budget -= n
            i += 1

        if not preempted:
            waiting = self.waiting
            while waiting and budget > 0 and len(running) < self.max_num_seqs:
                req = waiting[0]
                n = req.prompt_tokens + req.num_output - req.num_computed
                if n > budget:
                    n = budget
                need = self._blocks(req.num_computed + n) - req.num_blocks
                if need > self.free_blocks:
                    break
                waiting.popleft()
                running.append(req)
                self.free_blocks -= need
                req.num_blocks += need
                entries.append((req, n))
                budget -= n

        if not entries:
            return None
        sampled = 0
        chunks = []
        for req, n in entries:
            chunks.append((n, req.num_computed))
            if req.num_computed + n >= req.prompt_tokens + req.num_output:
                sampled += 1
        cost = self.perf.step_cost(StepLoad(tuple(chunks), sampled))
        return Step(t, t + cost.duration_s, cost, entries)

    def complete(self, step: Step) -> StepResult:
        """Apply a step at its end time: advance computed tokens, sample, finish, free blocks."""
        t = step.end
        st = self.stats
        st.steps += 1
        st.busy_s += step.cost.duration_s
        st.bytes_moved += step.cost.bytes_moved
        st.flops += step.cost.flops
        sampled: list[SimRequest] = []
        first: list[SimRequest] = []
        finished: list[SimRequest] = []
        itl: dict[float, int] = {}
        for req, n in step.entries:
            if req.aborted:
                continue
            req.num_computed += n
            if req.num_computed < req.prompt_tokens + req.num_output:
                continue  # mid-prefill chunk: no token yet
            req.num_output += 1
            if req.first_token_time is None:
                req.first_token_time = t
                st.prompt_tokens += req.prompt_tokens
                first.append(req)
            else:
                gap = t - req.last_token_time
                itl[gap] = itl.get(gap, 0) + 1
            req.last_token_time = t
            sampled.append(req)
            if req.num_output >= req.max_tokens:
                req.finished = True
                req.finish_time = t
                finished.append(req)
        st.generation_tokens += len(sampled)
        if finished:
            st.finished += len(finished)
            for req in finished:
                self.free_blocks += req.num_blocks
                req.num_blocks = 0
            self.running = [r for r in self.running if not r.finished]
        return StepResult(step, sampled, first, finished, itl)


# -- virtual-time closed loop (calibration, tests) -------------------------------------------------------------------

@dataclass
class LevelStats:
    """Metrics of one closed-loop level, defined like `vllm bench serve`."""

    concurrency: int
    requests: int
    duration_s: float
    output_throughput: float         # output tokens / s
    mean_ttft_ms: float
    p99_ttft_ms: float
    mean_tpot_ms: float
    mean_itl_ms: float
    mean_e2e_ms: float
    max_running: int
    preemptions: int
    output_tokens: int
    per_request_tokens: list[int] = field(default_factory=list, repr=False)
    p50_ttft_ms: float = 0.0
    engine: SchedulerStats | None = field(default=None, repr=False)   # busy time, bytes and FLOPs of the steps
    # per request, in completion order: (arrival s, TTFT s, E2E s, output tokens, user), virtual time from the level's
    # start; user = the closed-loop user that sent it (None in the engine-only loop)
    records: list[tuple[float, float, float, int, int | None]] = field(default_factory=list, repr=False)


def simulate_closed_loop(perf: PerfModel, concurrency: int, num_requests: int, input_len: int, output_len: int,
                         frontend_latency_s: float | None = None, host: HostProfile | None = None,
                         text_prompt: bool = False, ramp_s: float = 0.0) -> LevelStats:
    """C virtual users, each sending its next request the moment its previous one ends, until `num_requests` have
    been sent; everything in virtual time (no sockets, no sleeping).

    With `host`, requests and streamed tokens also pass through the API server's single-threaded queue
    (engines/sim/host.py): a request reaches the scheduler when the API server has processed it, a token reaches
    the client when the API server has framed it, and a user's next request leaves when its last token arrived.
    Without it, the engine's times are the client's (the model before host profiles).
    `ramp_s`: user g sends its first request at g * ramp_s / C, as Melt's load generator ramps up a level
    (bench/loadgen.py); 0 = all at once, as `vllm bench serve`. Host path only."""
    if host is None:
        if ramp_s:
            raise ValueError("ramp_s needs a host profile")
        return _closed_loop_engine_only(perf, concurrency, num_requests, input_len, output_len, frontend_latency_s)
    clock = VirtualClock(0.0)
    sched = Scheduler(perf, clock=clock, frontend_latency_s=frontend_latency_s)
    api = ApiServer()
    sent = 0
    done: list[SimRequest] = []
    seen: dict[str, list[float]] = {}     # rid -> [first token delivered, last token delivered]
    max_running = 0
    req_cost, tokenize = host.request_cost_s(), host.tokenize_s(input_len, text_prompt)
    if host.api_shares_engine_core:        # one core: tokenizing is the core's work too (engines/sim/host.py)
        req_cost, tokenize = req_cost + tokenize, 0.0
    tok = ApiServer()                      # the tokenizer's one worker thread, ahead of the API core
    per_step = host.api_per_step_s

    def token_cost() -> float:
        return host.per_token_s(api.open_streams)

    def send(t: float, user: int) -> None:
        nonlocal sent
        req = SimRequest(rid=str(sent), prompt_tokens=input_len, max_tokens=output_len, arrival=t, owner=user)
        sent += 1

        def admitted(t_done: float) -> None:
            api.open_streams += 1
            sched.add(req, after=t_done)
        # a text prompt is tokenized first, in the tokenizer's worker thread (off the API core, one prompt at a
        # time), then takes its turn on the core
        if tokenize:
            tok.submit(t, tokenize, lambda t_tok: api.submit(t_tok, req_cost, admitted))
        else:
            api.submit(t, req_cost, admitted)

    def delivered(req: SimRequest, last: bool) -> Callable[[float], None]:
        def cb(t_done: float) -> None:
            rec = seen.setdefault(req.rid, [t_done, t_done])
            rec[1] = t_done
            if last:
                api.open_streams -= 1
                done.append(req)
                if sent < num_requests:
                    send(t_done, req.owner)      # the same user's next request
        return cb

    users = min(concurrency, num_requests)
    for g in range(users):
        send(g * ramp_s / users if ramp_s > 0 else 0.0, g)
    t = 0.0
    while len(done) < num_requests:
        tok.run_until(t)
        api.run_until(t)
        if len(done) >= num_requests:
            break
        step = sched.schedule(t)
        if step is None:
            cands = [x for x in (sched.next_ready_time(), api.next_arrival(), tok.next_arrival()) if x is not None]
            if not cands:
                raise RuntimeError("closed loop stalled with requests outstanding")
            t = max(t, min(cands))
            if t == float("-inf"):
                raise RuntimeError("closed loop stalled with requests outstanding")
            continue
        max_running = max(max_running, len(step.entries))
        step.end += host.shared_core_stretch(api.free_at, step.start, step.end - step.start)
        res = sched.complete(step)
        t = clock.now = step.end
        if res.sampled and per_step:
            api.submit(t, per_step, _nothing)
        for req in res.sampled:
            api.submit(t, token_cost, delivered(req, req.finished))

    firsts = {r.rid: seen[r.rid][0] for r in done}
    lasts = {r.rid: seen[r.rid][1] for r in done}
    ttfts = sorted(firsts[r.rid] - r.arrival for r in done)
    e2es = [lasts[r.rid] - r.arrival for r in done]
    tpots = [(lasts[r.rid] - firsts[r.rid]) / (r.num_output - 1) for r in done if r.num_output > 1]
    total_out = sum(r.num_output for r in done)
    itl_total = sum(lasts[r.rid] - firsts[r.rid] for r in done)
    itl_count = sum(r.num_output - 1 for r in done)
    duration = max(lasts.values()) - min(r.arrival for r in done)
    records = [(r.arrival, firsts[r.rid] - r.arrival, lasts[r.rid] - r.arrival, r.num_output, r.owner) for r in done]
    return _level(concurrency, done, duration, total_out, ttfts, e2es, tpots, itl_total, itl_count, max_running,
                  sched.stats, records)


def _nothing(_t: float) -> None:
    pass


def _level(concurrency, done, duration, total_out, ttfts, e2es, tpots, itl_total, itl_count, max_running,
           stats: SchedulerStats, records=None) -> LevelStats:
    n = len(done)
    return LevelStats(
        concurrency=concurrency, requests=n, duration_s=duration,
        output_throughput=total_out / duration,
        mean_ttft_ms=1e3 * sum(ttfts) / n,
        p99_ttft_ms=1e3 * ttfts[min(n - 1, int(0.99 * n))],
        mean_tpot_ms=1e3 * sum(tpots) / len(tpots) if tpots else 0.0,
        mean_itl_ms=1e3 * itl_total / itl_count if itl_count else 0.0,
        mean_e2e_ms=1e3 * sum(e2es) / n,
        max_running=max_running, preemptions=stats.preemptions, output_tokens=total_out,
        per_request_tokens=[r.num_output for r in done], p50_ttft_ms=1e3 * ttfts[n // 2], engine=stats,
        records=records if records is not None else
        [(r.arrival, r.first_token_time - r.arrival, r.finish_time - r.arrival, r.num_output, None) for r in done])


def _closed_loop_engine_only(perf: PerfModel, concurrency: int, num_requests: int, input_len: int, output_len: int,
                             frontend_latency_s: float | None = None) -> LevelStats:
    clock = VirtualClock(0.0)
    sched = Scheduler(perf, clock=clock, frontend_latency_s=frontend_latency_s)
    sent = 0
    done: list[SimRequest] = []
    max_running = 0

    def send(t: float) -> None:
        nonlocal sent
        sched.add(SimRequest(rid=str(sent), prompt_tokens=input_len, max_tokens=output_len, arrival=t))
        sent += 1

    for _ in range(min(concurrency, num_requests)):
        send(0.0)
    t = 0.0
    while len(done) < num_requests:
        step = sched.schedule(t)
        if step is None:
            nxt = sched.next_ready_time()
            if nxt is None:
                raise RuntimeError("closed loop stalled with requests outstanding")
            t = max(t, nxt)
            continue
        max_running = max(max_running, len(step.entries))
        res = sched.complete(step)
        t = clock.now = step.end
        for req in res.finished:
            done.append(req)
            if sent < num_requests:
                send(t)

    ttfts = sorted(r.first_token_time - r.arrival for r in done)
    e2es = [r.finish_time - r.arrival for r in done]
    tpots = [(r.finish_time - r.first_token_time) / (r.num_output - 1) for r in done if r.num_output > 1]
    total_out = sum(r.num_output for r in done)
    itl_total = sum(r.finish_time - r.first_token_time for r in done)
    itl_count = sum(r.num_output - 1 for r in done)
    duration = max(r.finish_time for r in done) - min(r.arrival for r in done)
    return _level(concurrency, done, duration, total_out, ttfts, e2es, tpots, itl_total, itl_count, max_running,
                  sched.stats)
