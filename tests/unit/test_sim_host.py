"""The API-server model (engines/sim/host.py) and its place in the closed loop (scheduler.simulate_closed_loop)."""
from __future__ import annotations

import pytest

from catalog import CatalogError, get_gpu, get_model
from engines.sim import fit_host
from engines.sim.host import ApiServer, HostProfile, load_host_profile
from engines.sim.model import PerfModel
from engines.sim.scheduler import simulate_closed_loop


def _per_token_measured(prof: HostProfile, which: str) -> float:
    return getattr(prof, f"per_token_{which}_s") + prof.per_request_s / fit_host.OUT_LEN


def _profile(**kw) -> HostProfile:
    base = dict(id="t", per_token_light_s=50e-6, per_token_heavy_s=150e-6, light_streams=100, heavy_streams=300)
    base.update(kw)
    return HostProfile(**base)


def test_per_token_cost_interpolates_between_the_measured_points_and_clamps():
    p = _profile()
    assert p.per_token_s(1) == p.per_token_s(100) == pytest.approx(50e-6)
    assert p.per_token_s(200) == pytest.approx(100e-6)
    assert p.per_token_s(300) == p.per_token_s(5000) == pytest.approx(150e-6)


def test_tokenization_is_charged_for_text_prompts_only_and_off_the_api_queue():
    p = _profile(per_request_s=1e-3, tokenize_per_prompt_token_s=5e-6)
    assert p.request_cost_s() == pytest.approx(1e-3)
    assert p.tokenize_s(512, text_prompt=False) == 0.0
    assert p.tokenize_s(512, text_prompt=True) == pytest.approx(512 * 5e-6)
    # 64 text requests at once: vLLM's tokenizer is ONE worker thread (renderer_num_workers 1), so the k-th waits
    # for k tokenizations of 5.12 ms: (1 + 64) / 2 of them on average, while the API core is free
    q = _profile(per_token_light_s=0.0, per_token_heavy_s=0.0, tokenize_per_prompt_token_s=10e-6)
    ids = simulate_closed_loop(_perf(), 64, 64, 512, 16, host=q)
    text = simulate_closed_loop(_perf(), 64, 64, 512, 16, host=q, text_prompt=True)
    ttft = lambda lv: sorted(r[1] for r in lv.records)  # noqa: E731
    assert ttft(text)[-1] >= 64 * 5.12e-3                            # the last one waited for all 64
    assert ttft(text)[-1] > ttft(ids)[-1] + 0.1
    # spaced out, nobody waits for anyone's tokenization but their own
    one = simulate_closed_loop(_perf(), 1, 4, 512, 16, host=q, text_prompt=True)
    one_ids = simulate_closed_loop(_perf(), 1, 4, 512, 16, host=q)
    assert one.mean_ttft_ms - one_ids.mean_ttft_ms == pytest.approx(5.12, abs=0.05)


def test_on_a_shared_core_the_api_stretches_the_engine_and_tokenizing_is_core_work():
    sep = _profile(per_token_light_s=20e-6, per_token_heavy_s=20e-6)
    one = sep.model_copy(update={"api_shares_engine_core": True})
    assert sep.shared_core_stretch(5.0, 1.0, 2.0) == 0.0
    assert one.shared_core_stretch(0.5, 1.0, 2.0) == 0.0        # nothing queued during the step
    assert one.shared_core_stretch(1.5, 1.0, 2.0) == pytest.approx(0.5)
    assert one.shared_core_stretch(9.0, 1.0, 2.0) == pytest.approx(2.0)   # both busy all along: half the core each
    a = simulate_closed_loop(_perf(), 64, 256, 512, 64, host=sep)
    b = simulate_closed_loop(_perf(), 64, 256, 512, 64, host=one)
    # the engine's own work is the same (busy_s counts it, not the stretch); the API's share of the core is what makes
    # the steps, and so the level, longer
    assert b.engine.busy_s == pytest.approx(a.engine.busy_s, rel=0.02)
    assert b.output_throughput < 0.85 * a.output_throughput   # 64 x 20 us of API work beside ~5 ms steps
    assert b.duration_s > a.duration_s
    # tokenizing on the one core: core work (it stretches steps), not a wait in a thread of its own
    t = one.model_copy(update={"tokenize_per_prompt_token_s": 10e-6})
    burst = simulate_closed_loop(_perf(), 64, 64, 512, 16, host=t, text_prompt=True)
    ids = simulate_closed_loop(_perf(), 64, 64, 512, 16, host=t)
    assert burst.mean_ttft_ms > ids.mean_ttft_ms + 100


def test_the_api_pays_once_per_engine_step_as_well():
    p = _profile(per_token_light_s=0.0, per_token_heavy_s=0.0, per_request_s=0.0)
    q = p.model_copy(update={"api_per_step_s": 2e-3})
    a = simulate_closed_loop(_perf(), 1, 4, 64, 32, host=p)
    b = simulate_closed_loop(_perf(), 1, 4, 64, 32, host=q)
    # one stream: each token waits behind its step's 2 ms on the API core (a delay, not a slower stream)
    assert b.mean_ttft_ms - a.mean_ttft_ms == pytest.approx(2.0, abs=0.05)
    assert b.mean_tpot_ms == pytest.approx(a.mean_tpot_ms, abs=0.01)
    assert a.engine.steps == b.engine.steps
    # on a shared core the same work also lengthens the steps
    c = simulate_closed_loop(_perf(), 1, 4, 64, 32, host=q.model_copy(update={"api_shares_engine_core": True}))
    assert c.mean_tpot_ms > a.mean_tpot_ms + 1.5


def test_a_ramp_spreads_the_first_requests_as_melts_load_generator_does():
    host = _profile()
    burst = simulate_closed_loop(_perf(), 128, 128, 512, 32, host=host)
    ramp = simulate_closed_loop(_perf(), 128, 128, 512, 32, host=host, ramp_s=2.0)
    sends = sorted(r[0] for r in ramp.records)
    assert sends == pytest.approx([g * 2.0 / 128 for g in range(128)])
    assert ramp.mean_ttft_ms < burst.mean_ttft_ms
    assert len(ramp.records) == 128 and all(r[3] == 32 for r in ramp.records)
    with pytest.raises(ValueError, match="needs a host profile"):
        simulate_closed_loop(_perf(), 4, 8, 64, 8, ramp_s=1.0)


def test_api_server_is_one_fifo_queue():
    api, seen = ApiServer(), []
    api.submit(0.0, 1.0, lambda t: seen.append(("a", t)))
    api.submit(0.5, 1.0, lambda t: seen.append(("b", t)))      # waits for a
    api.submit(5.0, 1.0, lambda t: seen.append(("c", t)))      # idle gap: starts at its arrival
    api.run_until(1.0)
    assert seen == [("a", 1.0), ("b", 2.0)]                      # c has not arrived by t=1
    api.submit(2.0, lambda: 0.25, lambda t: seen.append(("d", t)))   # cost evaluated when it starts
    api.run_until(10.0)
    assert seen[2:] == [("d", 2.25), ("c", 6.0)]
    assert api.busy_s == pytest.approx(3.25)


def test_callbacks_may_submit_follow_up_jobs():
    api, seen = ApiServer(), []
    api.submit(0.0, 1.0, lambda t: api.submit(t, 1.0, lambda t2: seen.append(t2)))
    api.run_until(3.0)
    assert seen == [2.0]


def test_profiles_load_and_reject_unknown_fields(tmp_path):
    assert load_host_profile().id == "typical-datacenter-core"
    assert load_host_profile("h200-host-b-2026-12-01").per_token_heavy_s > load_host_profile().per_token_heavy_s
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\nper_token_light_s: 1e-5\nper_token_heavy_s: 1e-5\nturbo: true\n")
    with pytest.raises(CatalogError):
        load_host_profile(bad)
    with pytest.raises(CatalogError):
        load_host_profile("no-such-host")


@pytest.mark.parametrize("host_id,data", [("typical-datacenter-core", "h100-host-2026-11-22"),
                                          ("h200-host-b-2026-12-01", "h200-host-b-2026-12-01")])
def test_stored_profiles_match_the_fit_of_the_stored_runs(host_id, data):
    prof, fitted = load_host_profile(host_id), fit_host.fit(data)
    # the measured API CPU per request, split by fit_engine between per-request and per-token
    assert _per_token_measured(prof, "light") == pytest.approx(fitted["per_token_light_s"], rel=1e-3)
    assert _per_token_measured(prof, "heavy") == pytest.approx(fitted["per_token_heavy_s"], rel=1e-3)
    assert prof.tokenize_per_prompt_token_s == pytest.approx(fit_host.fit("h200-host-b-2026-12-01")
                                                             ["tokenize_per_prompt_token_s"], rel=1e-3)
    assert fitted["text_only"] is False


def test_a_text_only_host_estimates_its_tokenization_from_a_measured_host():
    # host c (2026-12-03) has no token-id runs: its tokenization is host d's measured one scaled by the two hosts'
    # one-stream speed, taken out of its per-token costs (vLLM tokenizes off the API core)
    prof, fitted = load_host_profile("h200-host-c-2026-12-03"), fit_host.fit("h200-host-c-2026-12-03")
    d = fit_host.fit("h200-host-d-2026-12-03")
    assert fitted["text_only"] is True and fitted["tokenize_estimated_from"] == "h200-host-d-2026-12-03"
    speed = d["levels"][(1, "ids")][2] / fitted["levels"][(1, "melt-text")][2]
    assert 0.6 < speed < 0.9                         # host c's engine loop is the faster
    assert fitted["tokenize_per_prompt_token_s"] == pytest.approx(d["tokenize_per_prompt_token_s"] * speed)
    assert prof.tokenize_per_prompt_token_s == pytest.approx(fitted["tokenize_per_prompt_token_s"], rel=1e-3)
    melt_128 = fitted["levels"][(128, "melt-text")]
    # what the API process measured per request at c=128 = per-token share + per-request share + tokenization
    total = _per_token_measured(prof, "light") * 128 + prof.tokenize_per_prompt_token_s * 512
    assert total == pytest.approx(melt_128[0], rel=1e-3)
    assert 0.9 < melt_128[1] < 1.1        # the one API core was saturated there: the cost is its service time
    # a faster frontend than host b's, as measured (about 2x the output tok/s at c=512)
    assert _per_token_measured(prof, "heavy") < load_host_profile("h200-host-b-2026-12-01").per_token_heavy_s / 2


def _perf(gpu="H200-141GB"):
    return PerfModel(get_gpu(gpu), get_model("Qwen/Qwen3-0.6B"))


def test_a_free_host_changes_nothing():
    perf = _perf()
    free = _profile(per_token_light_s=0.0, per_token_heavy_s=0.0)
    for c, n in ((1, 20), (64, 128)):
        a = simulate_closed_loop(perf, c, n, 512, 128)
        b = simulate_closed_loop(perf, c, n, 512, 128, host=free)
        assert b.output_throughput == pytest.approx(a.output_throughput)
        assert b.mean_ttft_ms == pytest.approx(a.mean_ttft_ms)
        assert b.mean_itl_ms == pytest.approx(a.mean_itl_ms)


def test_the_api_core_bounds_throughput():
    # 1 ms per token: one core frames at most 1,000 tokens/s whatever the GPU does.
    slow = _profile(per_token_light_s=1e-3, per_token_heavy_s=1e-3)
    s = simulate_closed_loop(_perf(), 256, 512, 512, 128, host=slow)
    assert 900 < s.output_throughput <= 1000.0 + 1e-6


def test_text_prompts_add_their_tokenization_to_ttft():
    p = _profile(per_token_light_s=0.0, per_token_heavy_s=0.0, tokenize_per_prompt_token_s=10e-6)
    ids = simulate_closed_loop(_perf(), 1, 10, 512, 16, host=p)
    text = simulate_closed_loop(_perf(), 1, 10, 512, 16, host=p, text_prompt=True)
    assert text.mean_ttft_ms - ids.mean_ttft_ms == pytest.approx(5.12, abs=0.01)
    assert text.mean_itl_ms == pytest.approx(ids.mean_itl_ms)


def test_measured_shape_throughput_peaks_then_falls_and_ttft_climbs():
    host = load_host_profile("h200-host-b-2026-12-01")
    s = {c: simulate_closed_loop(_perf(), c, 2 * c, 512, 128, host=host) for c in (128, 512, 1024)}
    assert s[512].output_throughput < 0.8 * s[128].output_throughput
    assert s[128].mean_ttft_ms < s[512].mean_ttft_ms < s[1024].mean_ttft_ms
    no_host = simulate_closed_loop(_perf(), 512, 1024, 512, 128)
    assert no_host.output_throughput > s[128].output_throughput     # without the host the sim keeps rising


def test_host_d_profile_is_the_fit_of_its_text_and_token_id_runs():
    """Host d (2026-12-03) is the first H200 host with Melt text AND token ids at every level: its own tokenization."""
    prof, fitted = load_host_profile("h200-host-d-2026-12-03"), fit_host.fit("h200-host-d-2026-12-03")
    assert fitted["text_only"] is False
    for which in ("light", "heavy"):
        assert _per_token_measured(prof, which) == pytest.approx(fitted[f"per_token_{which}_s"], rel=1e-3), which
    assert prof.tokenize_per_prompt_token_s == pytest.approx(fitted["tokenize_per_prompt_token_s"], rel=1e-3)
    # its micro block is calibrate-host in the same lease: the reference a scaled-micro profile needs
    assert prof.micro is not None and prof.micro.cpu_count == 16 and prof.derivation == "real-runs"


def test_a_hosts_engine_overheads_replace_the_engine_profiles():
    from engines.sim.model import DEFAULT_PROFILE, StepLoad

    plain = _profile()
    assert plain.engine_profile(DEFAULT_PROFILE) is DEFAULT_PROFILE          # None: the defaults stay
    slow = _profile(engine_step_s=3e-3, engine_per_seq_s=5e-6, engine_prefill_s=2e-3, engine_piecewise_s=1e-3,
                    frontend_latency_s=7e-3)
    got = _perf_host(slow).profile
    assert (got.step_overhead_s, got.per_seq_overhead_s, got.prefill_chunk_s, got.piecewise_step_s,
            got.frontend_latency_s) == (3e-3, 5e-6, 2e-3, 1e-3, 7e-3)
    assert _perf_host(plain).profile == DEFAULT_PROFILE
    # one stream on a slow engine loop decodes at the loop's pace (the GPU's 0.6B step is shorter: async scheduling
    # hides the GPU under the CPU), on the default loop at the longer of the two
    perf = _perf_host(slow)
    gpu = perf.step_cost(StepLoad(((1, 600),), 1))
    assert gpu.duration_s == pytest.approx(3e-3 + 5e-6)
    b = simulate_closed_loop(perf, 1, 10, 512, 128, host=slow)
    assert b.mean_tpot_ms == pytest.approx((3e-3 + 5e-6) * 1e3, rel=0.02)
    a = simulate_closed_loop(_perf_host(plain), 1, 10, 512, 128, host=plain)
    assert a.output_throughput > b.output_throughput * 1.2
    # the prefill step carries the per-chunk and piecewise CPU: TTFT up by about that and the frontend latency
    assert b.mean_ttft_ms - a.mean_ttft_ms == pytest.approx(
        (3e-3 + 2e-3 + 1e-3 + 7e-3 - DEFAULT_PROFILE.step_overhead_s - DEFAULT_PROFILE.prefill_chunk_s
         - DEFAULT_PROFILE.piecewise_step_s - DEFAULT_PROFILE.frontend_latency_s) * 1e3, abs=1.5)


def test_fit_engine_recovers_known_overheads():
    """Synthetic 'measured' figures from the sim itself with known engine costs: the search finds them."""
    base = load_host_profile("h200-host-d-2026-12-03")
    truth = base.model_copy(update={"engine_step_s": 2.5e-3, "engine_per_seq_s": 15e-6, "engine_prefill_s": 3e-3,
                                    "engine_piecewise_s": 3e-3})
    perf = PerfModel(get_gpu("H200-141GB"), get_model("Qwen/Qwen3-0.6B"), host=truth)
    real = {}
    for c in (1, 16):
        n = fit_host.FIT_REQUESTS_C1 if c == 1 else fit_host.REQUESTS[c]
        s = simulate_closed_loop(perf, c, n, 512, 128, host=truth)
        real[(c, "tok/s")], real[(c, "ttft_ms")] = s.output_throughput, s.mean_ttft_ms
    fitted, check = fit_host.fit_engine_to(real, base, "H200-141GB", "Qwen/Qwen3-0.6B", text_prompt=False,
                                           per_seq_grid=(10e-6, 15e-6, 20e-6), latency_grid=(0.0, 0.5),
                                           chunk_grid=(0.3, 0.5, 1.0), request_grid=(0.0,))
    assert fitted["engine_per_seq_s"] == 15e-6
    assert fitted["engine_step_s"] == pytest.approx(2.5e-3, rel=0.02)
    assert fitted["engine_prefill_s"] == pytest.approx(3e-3, rel=0.05)
    assert fitted["engine_piecewise_s"] == pytest.approx(3e-3, rel=0.05)
    assert fitted["frontend_latency_s"] == base.frontend_latency_s          # latency share 0
    assert all(abs(a / b - 1) < 0.02 for (c, k), (a, b) in check.items() if k != "prefill_s"), check
    assert fit_host.at_bound(fitted, check, per_seq_grid=(10e-6, 15e-6, 20e-6), request_grid=(0.0,)) == []


@pytest.mark.parametrize("host_id", ["h200-host-c-2026-12-03", "h200-host-d-2026-12-03"])
def test_stored_engine_overheads_are_the_fit_of_the_stored_runs(host_id):
    prof = load_host_profile(host_id)
    fitted, check = fit_host.fit_engine(host_id)
    for k, v in fitted.items():
        assert getattr(prof, k) == pytest.approx(v, rel=0.01, abs=1e-7), k
    # c=1 is matched by construction (the two bisections); 16, 128 and 512 are what the grid scored, printed by
    # `fit_host --engine` and tabled in docs/PERFORMANCE.md
    assert all(abs(check[(1, k)][0] / check[(1, k)][1] - 1) < 0.01 for k in ("tok/s", "ttft_ms"))
    assert {c for c, _ in check} == {1, *fit_host.FIT_LEVELS} and check[(1, "prefill_s")][0] > 0
    if host_id.endswith("c-2026-12-03"):
        # this host's engine loop is faster than the H100 host's (the defaults were fitted there)
        assert prof.engine_step_s < 0.85 * PerfModel(get_gpu("H100-SXM-80GB"), get_model("Qwen/Qwen3-0.6B")
                                                     ).profile.step_overhead_s
    assert fit_host.at_bound(fitted, check) == []


def _perf_host(host, model="Qwen/Qwen3-0.6B"):
    return PerfModel(get_gpu("H200-141GB"), get_model(model), host=host)


def test_projection_swaps_the_gpu_and_keeps_the_fitted_host():
    """Issue #13 item 4's check: constants fitted on one GPU's runs, the other GPU, against that GPU's runs."""
    rows = fit_host.projection()
    assert {(r[1], r[2]) for r in rows} == {("H100-SXM-80GB", "H200-141GB"), ("H200-141GB", "H100-SXM-80GB")}
    assert len(rows) == 2 * len(fit_host.LEVELS)
    by = {(r[0], r[3]): r for r in rows}
    # the projected level is the sim on the target GPU with the source host's profile, nothing refitted
    host = load_host_profile("typical-datacenter-core")
    direct = simulate_closed_loop(_perf_host(host), 128, fit_host.REQUESTS[128], 512, 128, host=host)
    assert by[("typical-datacenter-core", 128)][4] == pytest.approx(direct.output_throughput)
    # one stream on two hosts whose engine loops were fitted within 2 % of each other: projected within 5 %
    assert all(abs(by[(h, 1)][4] / by[(h, 1)][5] - 1) < 0.05 for h in ("typical-datacenter-core",
                                                                         "h200-host-d-2026-12-03"))


def test_spread_is_the_measurements_own_range_over_its_rounds():
    """fit_host.spread: per file (one server), level and client tool, the rounds' lowest and highest figures."""
    got = fit_host.spread("h200-host-d-2026-12-03")
    table = fit_host.fit("h200-host-d-2026-12-03")["levels"]    # one file there: the same rounds, by prompt kind
    for (f, c, tool), (n, t0, t1, f0, f1) in got.items():
        assert f == "compare_c1_16_128_512_1024" and tool in ("melt", "melt-ids") and t0 <= t1 and f0 <= f1
        assert n == table[(c, "ids" if tool == "melt-ids" else "melt-text")][4]
    # host d's two text rounds at 512 users: mean TTFT 1,505 and 2,586 ms (the comparison's 2,046 is their mean)
    n, _, _, f0, f1 = got[("compare_c1_16_128_512_1024", 512, "melt")]
    assert n == 2 and f0 == pytest.approx(1504.9, abs=0.1) and f1 == pytest.approx(2586.3, abs=0.1)
    # the H100 host's sessions are files of their own: session B's Melt rounds at 1,024 users, not A's with them
    b = fit_host.spread("h100-host-2026-11-22")[("B_c1024", 1024, "melt")]
    assert b[0] == 4 and b[1] == pytest.approx(10733, abs=1) and b[2] == pytest.approx(11021, abs=1)
