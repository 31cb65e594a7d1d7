"""The simulator's continuous-batching scheduler, run in virtual time (no sockets, no sleeping)."""
import random

import pytest

from catalog import get_gpu, get_model
from engines.sim.model import PerfModel, SimKnobs
from engines.sim.scheduler import Scheduler, SimRequest, VirtualClock, simulate_closed_loop

H100 = get_gpu("H100-SXM-80GB")
QWEN06 = get_model("Qwen/Qwen3-0.6B")


def perf(**knobs) -> PerfModel:
    return PerfModel(H100, QWEN06, SimKnobs(**knobs))


def perf_with_kv_tokens(tokens: int, **knobs) -> PerfModel:
    """A model whose KV cache holds about `tokens` tokens: pick mem_fraction to leave exactly that room."""
    probe = perf(**knobs)
    need = probe.weight_bytes_total + probe.reserve_bytes + (tokens + 8) * probe.kv_bytes_per_token
    p = perf(mem_fraction=need / (H100.memory_gb * 1e9), **knobs)
    assert tokens - 32 <= p.kv_capacity_tokens <= tokens + 32
    return p


def drive(sched: Scheduler, clock: VirtualClock, check=None, limit_steps=1_000_000):
    """Run steps until nothing is left; `check(step)` sees every step before it is applied."""
    t = clock.now
    for _ in range(limit_steps):
        if not sched.has_work():
            return t
        step = sched.schedule(t)
        if step is None:
            t = max(t, sched.next_ready_time())
            continue
        if check:
            check(step)
        sched.complete(step)
        t = clock.now = step.end
    raise AssertionError("did not drain")


def test_every_request_gets_exactly_max_tokens():
    rng = random.Random(7)
    clock = VirtualClock()
    sched = Scheduler(perf(), clock=clock)
    arrivals = sorted(rng.uniform(0, 0.5) for _ in range(300))  # one monotonic clock stamps real arrivals
    reqs = [sched.add(SimRequest(str(i), rng.randint(1, 3000), rng.randint(1, 300), arrival=t))
            for i, t in enumerate(arrivals)]
    drive(sched, clock)
    assert all(r.finished and r.num_output == r.max_tokens for r in reqs)
    assert sched.stats.generation_tokens == sum(r.max_tokens for r in reqs)
    assert sched.stats.prompt_tokens == sum(r.prompt_tokens for r in reqs)
    assert sched.free_blocks == sched.num_blocks
    for r in reqs:
        assert r.arrival + sched.frontend_latency_s <= r.first_token_time <= r.last_token_time == r.finish_time


def test_budget_seq_cap_and_decode_first():
    clock = VirtualClock()
    sched = Scheduler(perf(max_num_seqs=32, max_num_batched_tokens=2048), clock=clock)
    for i in range(100):
        sched.add(SimRequest(str(i), 700, 20, arrival=0.001 * i))
    seen_mixed = False

    def check(step):
        nonlocal seen_mixed
        assert sum(n for _, n in step.entries) <= 2048
        assert len(sched.running) <= 32
        decodes = [r for r, n in step.entries if r.num_output > 0]
        prefills = [r for r, n in step.entries if r.num_output == 0]
        # decode first: every running request that is past its prefill got its token in this step
        assert {id(r) for r in sched.running if r.num_output > 0} == {id(r) for r in decodes}
        seen_mixed |= bool(decodes and prefills)

    drive(sched, clock, check)
    assert seen_mixed  # chunked prefill rode along with decodes


def test_lone_request_ttft_is_frontend_plus_prefill():
    p = perf()
    clock = VirtualClock(10.0)
    sched = Scheduler(p, clock=clock)
    r = sched.add(SimRequest("a", 512, 3))
    assert r.arrival == 10.0  # stamped by the injected clock
    drive(sched, clock)
    prefill = p.step_time([(512, 0)], 1)
    assert r.first_token_time - r.arrival == pytest.approx(p.profile.frontend_latency_s + prefill)
    decode1 = p.step_time([(1, 512)], 1)
    assert r.finish_time - r.first_token_time == pytest.approx(decode1 + p.step_time([(1, 513)], 1))


def test_ttft_grows_with_queue_once_running_is_capped():
    clock = VirtualClock()
    sched = Scheduler(perf(max_num_seqs=8), clock=clock)
    reqs = [sched.add(SimRequest(str(i), 256, 64, arrival=0.0)) for i in range(64)]
    peak_waiting = 0

    def check(step):
        nonlocal peak_waiting
        assert len(sched.running) <= 8
        peak_waiting = max(peak_waiting, sched.num_waiting)

    drive(sched, clock, check)
    ttfts = [r.first_token_time - r.arrival for r in reqs]
    assert peak_waiting >= 56
    # the queue drains in waves of 8: each wave waits for the previous one to finish
    waves = [sum(ttfts[i:i + 8]) / 8 for i in range(0, 64, 8)]
    assert all(b > a for a, b in zip(waves, waves[1:]))
    assert waves[-1] > 5 * waves[0]


def test_closed_loop_throughput_saturates_and_ttft_grows():
    p = perf()
    s1, s16, s512, s1024 = (simulate_closed_loop(p, c, n, 512, 128)
                            for c, n in ((1, 20), (16, 64), (512, 1024), (1024, 2048)))
    assert s16.output_throughput > 8 * s1.output_throughput        # batching works at low concurrency
    assert s1024.output_throughput < 1.25 * s512.output_throughput  # ...and saturates at high concurrency
    assert s1.mean_ttft_ms < s16.mean_ttft_ms < s512.mean_ttft_ms < s1024.mean_ttft_ms
    assert s1024.max_running == 1024
    for s in (s1, s16, s512, s1024):
        assert set(s.per_request_tokens) == {128}


def test_preemption_when_kv_runs_out():
    p = perf_with_kv_tokens(4096, max_num_seqs=64, max_model_len=1024)
    clock = VirtualClock()
    sched = Scheduler(p, clock=clock)
    reqs = [sched.add(SimRequest(str(i), 200, 300, arrival=0.0)) for i in range(32)]  # 32 x 500 > 4096

    def check(step):
        assert sched.free_blocks >= 0
        assert sum(r.num_blocks for r in sched.running) + sched.free_blocks == sched.num_blocks

    drive(sched, clock, check)
    assert sched.stats.preemptions > 0
    assert any(r.preemptions for r in reqs)
    assert all(r.num_output == 300 for r in reqs)
    assert sched.free_blocks == sched.num_blocks
    # recomputed prompts are not double-counted as prompt tokens
    assert sched.stats.prompt_tokens == 32 * 200


def test_abort_frees_blocks_everywhere():
    clock = VirtualClock()
    sched = Scheduler(perf(), clock=clock)
    a = sched.add(SimRequest("a", 1000, 50, arrival=0.0))
    b = sched.add(SimRequest("b", 1000, 50, arrival=0.0))
    step = sched.schedule(1.0)
    sched.complete(step)
    assert a.num_blocks > 0 and sched.free_blocks < sched.num_blocks
    sched.abort(a)
    sched.abort(b)
    assert not sched.has_work() and sched.free_blocks == sched.num_blocks
    assert sched.stats.aborted == 2
    c = sched.add(SimRequest("c", 10, 5, arrival=1.0))
    sched.abort(c)  # still in the frontend queue
    assert not sched.has_work()
