"""bench/blitz.py: the saturation search rule, the level plans, the result document and the leaderboard."""
import pytest

from bench.blitz import (blitz_result, headline, leaderboard, level_workload, next_step, plan_after, result_rows,
                         search_point)
from bench.config import BlitzSpec, RunConfig, WorkloadSpec
from engines.spec import EngineSpec

SPEC = BlitzSpec(start_concurrency=8, max_concurrency=256, gain=0.10, minutes=2, repeats=2)


def pt(c, tok, status="completed", client_bound=False, n_err=0):
    return {"concurrency": c, "status": status, "tok_s": tok, "client_bound": client_bound, "n_err": n_err}


def test_doubles_while_throughput_rises_by_at_least_the_gain():
    assert next_step([], SPEC) == {"action": "search", "concurrency": 8, "reason": "first search level"}
    assert next_step([pt(8, 1000)], SPEC)["concurrency"] == 16
    step = next_step([pt(8, 1000), pt(16, 1100)], SPEC)   # +10.0% is not < 10%: go on
    assert step["action"] == "search" and step["concurrency"] == 32


def test_stops_at_the_first_doubling_that_gains_less_than_the_gain():
    step = next_step([pt(8, 1000), pt(16, 1900), pt(32, 2050)], SPEC)  # +7.9%
    assert step["action"] == "measure" and step["concurrency"] == 16   # the knee: the doubling did not pay
    assert "+7.9%" in step["reason"] and "< 10%" in step["reason"] and "knee, 16" in step["reason"]
    # a dip past the plateau measures the same knee, so a noisy search window cannot flip the choice
    step = next_step([pt(8, 1000), pt(16, 1900), pt(32, 1850)], SPEC)
    assert step["action"] == "measure" and step["concurrency"] == 16


def test_max_concurrency_ends_the_search_at_the_best_level():
    pts = [pt(8 * 2 ** k, 1000 * 2 ** k) for k in range(6)]   # 8..256, always doubling
    step = next_step(pts, SPEC)
    assert step["action"] == "measure" and step["concurrency"] == 256 and "max concurrency 256" in step["reason"]


def test_failed_client_bound_or_erroring_levels_stop_the_search():
    for bad, word in ((pt(32, 3000, client_bound=True), "client-bound"), (pt(32, 3000, n_err=3), "3 failed"),
                      (pt(32, None, status="failed"), "failed")):
        step = next_step([pt(8, 1000), pt(16, 1900), bad], SPEC)
        assert step["action"] == "measure" and step["concurrency"] == 16 and word in step["reason"]
    step = next_step([pt(8, 1000, client_bound=True)], SPEC)
    assert step["action"] == "fail" and step["concurrency"] is None


def test_plans_and_workloads():
    assert [(p.concurrency, p.phase) for p in plan_after({"action": "search", "concurrency": 16}, SPEC)] == [
        (16, "search")]
    m = plan_after({"action": "measure", "concurrency": 64}, SPEC)
    assert [(p.concurrency, p.phase, p.repeat) for p in m] == [(64, "measure", 1), (64, "measure", 2)]
    assert plan_after({"action": "fail", "concurrency": None}, SPEC) == []
    wl = WorkloadSpec(requests=100)
    s = level_workload(wl, SPEC, "search")
    assert s.requests is None and s.duration_s is None and s.min_steady_s == SPEC.search_steady_s
    assert s.steady_rule and s.min_requests_per_user == SPEC.search_requests_per_user
    assert level_workload(wl, SPEC, "measure").duration_s == 120.0
    cfg = RunConfig(engine=EngineSpec(kind="sim", model="Qwen/Qwen3-0.6B", sim_gpu="H100-SXM-80GB"), levels=[1],
                    blitz=SPEC)
    assert [(p.concurrency, p.phase) for p in cfg.planned_levels()] == [(8, "search")]
    with pytest.raises(ValueError):
        BlitzSpec(start_concurrency=64, max_concurrency=32)


def _level(c, phase, tok_steady, *, power=500.0, jpt=0.04, status="completed", ttft=30.0):
    return {"concurrency": c, "status": status,
            "summary": {"blitz": {"phase": phase}, "output_tok_s": tok_steady * 0.95, "n_err": 0,
                        "steady": {"window": True, "output_tok_s": tok_steady, "ttft_ms": {"p50": ttft, "p99": 2 * ttft},
                                   "tpot_ms": {"p50": 3.0, "p99": 4.0}},
                        "roofline": {"share": 0.25, "bound": "memory"}},
            "telemetry": {"avg_power_w": power, "joules_per_output_token": jpt, "peak_temp_gpu_c": 60.0,
                          "throttled_pct": 0.0}}


def test_result_document():
    levels = [_level(8, "search", 1000), _level(16, "search", 1050), _level(16, "measure", 1000),
              _level(16, "measure", 1020, power=510.0, jpt=0.05)]
    r = blitz_result(levels, spec=SPEC.model_dump(), verdict={"status": "PASS", "reasons": []}, gpu="H200-141GB",
                     model="Qwen/Qwen3-0.6B", versions={"engine": "0.32"},
                     gpu_facts={"0": {"name": "NVIDIA H200", "driver": "580.1", "serial": "secret-ish"}})
    assert r["score_output_tok_s"] == pytest.approx(1010) and r["score_is_steady"] is True
    assert r["concurrency"] == 16 and r["measured_levels"] == 2
    assert r["spread"] == pytest.approx(20 / 1010) and r["stable"] is True
    assert "2 runs agree within 2.0%" in headline(r)
    shaky = blitz_result([_level(16, "measure", 1000), _level(16, "measure", 1100)])
    assert shaky["stable"] is False and "DISAGREE by 9.5% (> 3%)" in headline(shaky)
    assert r["avg_power_w"] == pytest.approx(505) and r["tok_s_per_w"] == pytest.approx(1010 / 505)
    assert r["j_per_output_token"] == pytest.approx(0.045)
    assert r["ttft_p50_ms"] == pytest.approx(30) and r["tpot_p99_ms"] == pytest.approx(4)
    assert r["roofline_share"] == pytest.approx(0.25) and r["health"]["status"] == "PASS"
    assert [p["concurrency"] for p in r["search"]] == [8, 16]
    assert r["gpu_facts"] == [{"gpu": "0", "name": "NVIDIA H200", "driver": "580.1"}]   # serial not kept
    assert "1,010 output tok/s at concurrency 16" in headline(r) and "SIMULATED" not in headline(r)
    # a failed measured level does not count; none left -> no score
    none = blitz_result([_level(8, "search", 1000), _level(8, "measure", 900, status="failed")], simulated=True)
    assert none["score_output_tok_s"] is None and none["status"] == "failed"
    assert headline(none).startswith("Blitz: no score")
    sim = blitz_result(levels, simulated=True)
    assert "[SIMULATED]" in headline(sim)
    assert r["server_cpu_pct"] is None and "FRONTEND" not in headline(r)   # no engine process read: nothing said


def test_result_says_when_the_engine_frontend_bound_the_score():
    def with_cpu(lv, pct, bound):
        lv["summary"]["server_cpu"] = {"busiest": {"instance": "main", "name": "python3", "pid": 7, "pct": pct},
                                       "total_pct": pct + 80, "frontend_bound": bound}
        return lv
    r = blitz_result([_level(16, "search", 1000), with_cpu(_level(16, "measure", 1000), 98.0, True),
                      with_cpu(_level(16, "measure", 1000), 100.0, True)])
    assert r["server_cpu_pct"] == pytest.approx(99) and r["frontend_bound"] is True
    assert "FRONTEND-BOUND (engine python3 at 99% of a core" in headline(r)
    assert ("server CPU (busiest engine process)", "99% python3 frontend-bound") in result_rows(r)
    gpu_bound = blitz_result([with_cpu(_level(16, "measure", 1000), 60.0, False)])
    assert gpu_bound["frontend_bound"] is False and "FRONTEND" not in headline(gpu_bound)


def test_leaderboard_keeps_simulated_apart_and_ranks_by_best():
    def entry(rid, gpu, score, sim=False, health="PASS", count=1):
        return {"run_id": rid, "gpu": gpu, "gpu_count": count, "simulated": sim, "engine_kind": "vllm",
                "result": {"score_output_tok_s": score, "health": {"status": health}, "versions": {"engine": "0.32"},
                           "gpu_facts": [{"driver": "580.1"}]}}
    board = leaderboard([entry(1, "H100-SXM-80GB", 9000), entry(2, "H200-141GB", 12000),
                         entry(3, "H200-141GB", 11000, health="WARN"), entry(4, "H200-141GB", 13000),
                         entry(5, "H200-141GB", 99999, sim=True), entry(6, "H100-SXM-80GB", None)])
    real = board["real"]
    assert [(r["rank"], r["gpu"]) for r in real] == [(1, "H200-141GB"), (2, "H100-SXM-80GB")]
    h200 = real[0]
    assert h200["best"] == 13000 and h200["median"] == 12000 and h200["count"] == 3 and h200["best_run_id"] == 4
    assert h200["health"] == "WARN" and h200["health_counts"] == {"WARN": 1, "PASS": 2}
    assert h200["engines"] == ["vllm 0.32"] and h200["drivers"] == ["580.1"]
    assert real[1]["count"] == 1                     # the unscored run is not counted
    assert [r["best"] for r in board["simulated"]] == [99999] and board["simulated"][0]["simulated"] is True
    assert search_point(8, "completed", {"output_tok_s": 5.0, "steady": {"window": False}})["steady"] is False


def test_against_previous_pairs_the_same_gpu_engine_model_and_kind():
    from bench.blitz import against_previous

    def e(rid, score, gpu="H200-141GB", kind="vllm", sim=False, model="Qwen/Qwen3-0.6B", count=1):
        return {"run_id": rid, "gpu": gpu, "gpu_count": count, "engine_kind": kind, "simulated": sim,
                "result": {"score_output_tok_s": score, "model": model}}

    rows = [e(1, 20_000), e(2, 30_000, gpu="H100-SXM-80GB"), e(3, 9_000, kind="sim", sim=True), e(4, 20_400),
            e(5, 23_326), e(6, 1.0, model="other")]
    assert against_previous(rows[0], rows) is None                   # the first of its kind
    got = against_previous(rows[3], rows)                             # 20,400 against #1's 20,000
    assert got["run_id"] == 1 and got["agree"] and got["change"] == pytest.approx(0.02)
    assert got["spread"] == pytest.approx(400 / 20_200)
    got = against_previous(rows[4], rows)                             # the newest earlier one: #4, not #1
    assert got["run_id"] == 4 and not got["agree"] and got["spread"] == pytest.approx(2926 / 21_863)
    assert against_previous(rows[1], rows) is None and against_previous(rows[2], rows) is None
    assert against_previous(rows[5], rows) is None
    assert against_previous({"run_id": 9, "result": {}}, rows) is None


def test_against_previous_needs_the_same_setup_and_orders_by_start_time():
    from bench.blitz import against_previous

    def e(rid, score, created, setup):
        return {"run_id": rid, "gpu": "H200-141GB", "gpu_count": 1, "engine_kind": "vllm", "simulated": False,
                "created_at": created, "result": {"score_output_tok_s": score, "model": "m", "setup": setup}}

    a = {"input_len": {"min": 256, "max": 256}, "minutes": 5.0, "extra_args": []}
    b = {**a, "minutes": 1.0}
    rows = [e(1, 100.0, "2026-12-02 10:00", a), e(2, 101.0, "2026-12-02 09:00", a),   # #2 imported: older start
            e(3, 50.0, "2026-12-02 11:00", b), e(4, 102.0, "2026-12-02 12:00", a)]
    assert against_previous(rows[3], rows)["run_id"] == 1       # newest earlier start with the same setup, not #3
    assert against_previous(rows[0], rows)["run_id"] == 2       # #2 (an import, higher id) started before #1
    assert against_previous(rows[1], rows) is None              # nothing started before it
    assert against_previous(rows[2], rows) is None              # 1-minute setup: no earlier one
