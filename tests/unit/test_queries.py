"""storage.queries against a real, migrated SQLite file seeded through the storage models."""
from datetime import datetime, timezone

import pytest
from sqlalchemy import func, insert, select

from storage import queries as q
from storage.db import open_db
from storage.models import Request, TelemetrySample
from tests.app.seed import seed_history, seed_run


@pytest.fixture
def history(db):
    ids = seed_history(db, 4, levels=(1, 4, 16), requests_per_level=60)
    return db, ids


def test_list_runs_newest_first_and_filters(history):
    db, ids = history
    rows = q.list_runs(db)
    assert [r.id for r in rows] == sorted(ids, reverse=True)
    assert {r.id for r in q.list_runs(db, simulated=True)} == {ids[0], ids[3]}
    assert {r.id for r in q.list_runs(db, engines=["vllm"])} == {ids[1]}
    assert {r.id for r in q.list_runs(db, tags=["baseline"])} == {ids[0], ids[3]}
    assert {r.id for r in q.list_runs(db, tags=["baseline", "demo"])} == {ids[3]}
    assert {r.id for r in q.list_runs(db, search="FP8")} == {ids[1]}           # tag text, case-insensitive
    assert {r.id for r in q.list_runs(db, search="sglang")} == {ids[2]}
    assert {r.id for r in q.list_runs(db, search=f"#{ids[2]}")} == {ids[2]}
    assert q.list_runs(db, statuses=["running"]) == []
    assert len(q.list_runs(db, limit=2)) == 2
    facets = q.run_facets(db)
    assert facets["engines"] == ["sglang", "sim", "vllm"] and facets["tags"] == ["baseline", "demo", "fp8"]


def test_get_run_levels_and_level_table(history):
    db, ids = history
    d = q.get_run(ids[0], db)
    assert d.run.simulated and d.run.label.endswith("(SIMULATED)")
    assert [lv.concurrency for lv in d.levels] == [1, 4, 16]
    assert d.instances and d.instances[0].ready_at is not None
    rows = q.level_table(d)
    assert [r["concurrency"] for r in rows] == [1, 4, 16]
    for r, lv in zip(rows, d.levels):
        assert r["ttft_p99_ms"] == pytest.approx(lv.summary["ttft_ms"]["p99"])
        assert r["tok_s_per_user"] == pytest.approx(lv.output_tok_s / lv.concurrency)
    assert d.run.peak_output_tok_s == pytest.approx(max(r["output_tok_s"] for r in rows))
    assert q.get_run(9999, db) is None
    assert [x.run.id for x in q.get_runs([ids[1], 9999, ids[0]], db)] == [ids[1], ids[0]]


def test_per_user_throughput_of_a_request_rate_level_uses_requests_in_flight():
    from types import SimpleNamespace

    from storage.queries import _per_user

    closed = SimpleNamespace(concurrency=16, request_rate=None, req_s=10.0)
    assert _per_user(1600.0, closed, {}) == pytest.approx(100.0)
    # 2 req/s of 128-token requests lasting 2.5 s each: 5 in flight on average under a cap of 256, so each user
    # streams 256 / 5 = 51.2 tok/s (not 256 / 256 = 1)
    rate = SimpleNamespace(concurrency=256, request_rate=2.0, req_s=2.0)
    assert _per_user(256.0, rate, {"e2e_ms": {"mean": 2500.0}}) == pytest.approx(51.2)
    assert _per_user(None, rate, {}) is None


def test_request_points_incremental_and_aggregates(history):
    db, ids = history
    first = q.request_points(ids[0], db, limit=50)
    assert len(first["id"]) == 50 and first["id"] == sorted(first["id"])
    rest = q.request_points(ids[0], db, after_id=first["id"][-1])
    assert len(first["id"]) + len(rest["id"]) == 180
    agg = {a["level_id"]: a for a in q.request_aggregates(ids[0], db)}
    d = q.get_run(ids[0], db)
    for lv in d.levels:
        assert agg[lv.id]["n"] == 60 and agg[lv.id]["n_ok"] == lv.n_ok
        assert agg[lv.id]["output_tokens"] == lv.summary["output_tokens"]


def test_errors_are_counted_not_dropped(db):
    rid = seed_run(db, levels=(2, 8), requests_per_level=200, error_rate=0.2, seed=3)
    d = q.get_run(rid, db)
    n_err = sum(lv.n_err for lv in d.levels)
    assert n_err > 0
    breakdown = q.error_breakdown(rid, db)
    assert sum(e["count"] for e in breakdown) == n_err
    assert breakdown[0]["status_code"] == 503
    pts = q.request_points(rid, db)
    assert sum(q.throughput_series(pts)["errors"]) == n_err


def test_update_meta_and_delete(history):
    db, ids = history
    assert q.update_run_meta(ids[0], db, name="  renamed ", tags=["a", " a", "b", ""], notes="n <b>")
    r = q.get_run(ids[0], db).run
    assert (r.name, r.tags, r.notes) == ("renamed", ["a", "b"], "n <b>")
    assert not q.update_run_meta(9999, db, name="x")
    live = seed_run(db, status="running")
    with pytest.raises(q.RunActiveError):
        q.delete_run(live, db)
    assert q.delete_run(ids[0], db)
    assert q.get_run(ids[0], db) is None
    with open_db(db)() as s:  # children are gone too (100k-row tables deleted set-wise)
        assert s.scalar(select(func.count()).select_from(Request).where(Request.run_id == ids[0])) == 0
        assert s.scalar(select(func.count()).select_from(TelemetrySample).where(TelemetrySample.run_id == ids[0])) == 0
        assert s.scalar(select(func.count()).select_from(Request).where(Request.run_id == ids[1])) > 0
    assert not q.delete_run(ids[0], db)
    assert q.delete_run(live, db, force=True)


def test_throughput_series_by_hand():
    s = 1_000_000_000
    pts = {"send_ns": [0, 0, 0], "ttft_ms": [1000.0, 2500.0, None], "e2e_ms": [3000.0, 2500.0, 500.0],
           "output_tokens": [200, 50, None], "ok": [True, True, False], "warmup": [False, False, False]}
    out = q.throughput_series(pts, bucket_s=1.0, t0_ns=0)
    # 200 tokens streamed over [1 s, 3 s] = 100 tok/s; 50 tokens arrive at once at 2.5 s; one failure at 0.5 s.
    assert out["t_s"] == [0.0, 1.0, 2.0]
    assert out["output_tok_s"] == pytest.approx([0.0, 100.0, 150.0])
    assert out["errors"] == [1, 0, 0]
    assert q.throughput_series({"send_ns": []}) == {"t_s": [], "output_tok_s": [], "errors": []}
    # Warm-up requests are not counted.
    warm = dict(pts, warmup=[True, False, False])
    assert sum(q.throughput_series(warm, t0_ns=0)["output_tok_s"]) == pytest.approx(50.0)
    assert s  # (ns per second, for the reader)


def test_throughput_integral_equals_token_count(history):
    db, ids = history
    pts = q.request_points(ids[1], db)
    out = q.throughput_series(pts, bucket_s=0.5)
    assert sum(out["output_tok_s"]) * 0.5 == pytest.approx(sum(t or 0 for t in pts["output_tokens"]))


def test_latency_series_percentiles():
    pts = {"send_ns": [0] * 4 + [10_000_000_000] * 2, "e2e_ms": [100.0] * 6,
           "ttft_ms": [10.0, 20.0, 30.0, 40.0, 5.0, 7.0], "itl_mean_ms": [1.0, 1.0, 1.0, 1.0, None, 3.0],
           "ok": [True] * 6, "warmup": [False] * 6}
    out = q.latency_series(pts, bucket_s=5.0, t0_ns=0)
    assert out["t_s"] == [0.0, 10.0] and out["n"] == [4, 2]
    assert out["ttft_p50"] == pytest.approx([25.0, 6.0])
    assert out["itl_p50"] == pytest.approx([1.0, 3.0])          # missing ITL ignored, not zero


def test_counter_rate_skips_resets_and_short_gaps():
    t = [0, 1_000_000_000, 1_200_000_000, 2_000_000_000, 3_000_000_000]
    v = [0.0, 100.0, 110.0, 300.0, 5.0]
    out = q.counter_rate(t, v, min_dt_s=0.5)
    assert out["rate"] == pytest.approx([100.0, 200.0])           # 1.2 s sample skipped; reset at 3 s skipped
    assert out["t_ns"] == [500_000_000, 1_500_000_000]             # middle of each measured interval


def test_run_series_reads_only_new_rows(db):
    rid = seed_run(db, status="running", levels=(4, 8), requests_per_level=40)
    series = q.RunSeries(rid)
    n1 = series.refresh(db)
    assert n1 == len(series.requests["id"]) + len(series.telemetry["id"]) + len(series.engine["id"])
    assert series.refresh(db) == 0
    level_id = q.get_run(rid, db).levels[-1].id
    with open_db(db).begin() as s:
        s.execute(insert(Request), [{"run_id": rid, "level_id": level_id, "seq": 999, "send_ns": 1, "ok": True,
                                     "e2e_ms": 1.0, "output_tokens": 3}])
    assert series.refresh(db) == 1
    assert series.requests["output_tokens"][-1] == 3 and series.requests["send_ns"][-1] == 1


def test_sweep_progress(db):
    rid = seed_run(db, status="running", levels=(1, 4, 16), requests_per_level=100)
    d = q.get_run(rid, db)
    now = datetime.now(timezone.utc)
    p = q.sweep_progress(d, [(1, 100), (4, 100), (16, 100)], None, now)
    assert [lv.status for lv in p.levels] == ["completed", "completed", "running"]
    assert p.levels[2].done == 50 and p.levels[2].fraction == pytest.approx(0.5)
    assert p.fraction == pytest.approx(2.5 / 3)
    # A fourth, unstarted level is estimated at the last measured request rate.
    p4 = q.sweep_progress(d, [(1, 100), (4, 100), (16, 100), (64, 100)], None, now)
    assert p4.levels[3].status == "pending"
    assert p4.levels[3].eta_s == pytest.approx(100 / d.levels[1].req_s)
    assert p4.eta_s is not None and p4.eta_s > p4.levels[3].eta_s
    starting = q.get_run(seed_run(db, status="starting"), db)
    ps = q.sweep_progress(starting, [(1, 100)], None, now)
    assert ps.fraction == 0 and ps.levels[0].status == "pending"


def test_sweep_progress_after_the_end(db):
    """Issue 11 item 4: a finished run's elapsed time stops at its end; a cancelled level is not 100%."""
    from dataclasses import replace
    from datetime import timedelta

    rid = seed_run(db, status="completed", levels=(1, 4, 16), requests_per_level=100)
    d = q.get_run(rid, db)
    run_s = (d.run.finished_at - d.run.started_at).total_seconds()
    later = d.run.finished_at + timedelta(minutes=8)
    p = q.sweep_progress(d, [(1, 100), (4, 100), (16, 100)], None, later)
    assert p.fraction == 1.0 and p.eta_s == 0.0
    assert p.elapsed_s == pytest.approx(run_s)                   # not 8 minutes more

    # Cancelled during level 2 (30 of 100 requests finished), level 3 never started, a 4th planned.
    lv2 = replace(d.levels[1], status="cancelled", n_ok=25, n_err=5, duration_s=None,
                  finished_at=d.levels[1].started_at)
    lv3 = replace(d.levels[2], status="cancelled", n_ok=0, n_err=0, n_sent=0, duration_s=None)
    cancelled = replace(d, run=replace(d.run, status="cancelled"), levels=[d.levels[0], lv2, lv3])
    p = q.sweep_progress(cancelled, [(1, 100), (4, 100), (16, 100), (64, 100)], None, later)
    assert [lv.fraction for lv in p.levels] == [1.0, pytest.approx(0.3), 0.0, 0.0]
    assert [lv.status for lv in p.levels] == ["completed", "cancelled", "cancelled", "not run"]
    assert p.fraction == pytest.approx(1.3 / 4)
    assert p.levels[1].elapsed_s == 0.0                          # its own end, not `later`
    assert p.eta_s == 0.0 and p.levels[3].eta_s is None


def test_level_table_steady_and_repeat_when_present(db):
    from dataclasses import replace

    d = q.get_run(seed_run(db, levels=(1, 4), requests_per_level=20), db)
    steady = {"output_tok_s": 321.0, "req_s": 2.5, "ttft_ms": {"p50": 11.0}, "tpot_ms": {"p50": 4.0}}
    lv0 = replace(d.levels[0], summary={**d.levels[0].summary, "steady": steady}, repeat=1)
    rows = q.level_table(replace(d, levels=[lv0, d.levels[1]]))
    assert (rows[0]["steady_output_tok_s"], rows[0]["steady_ttft_p50_ms"], rows[0]["repeat"]) == (321.0, 11.0, 2)
    assert rows[0]["steady_e2e_p50_ms"] is None                 # missing in the sub-dict: None, no error
    assert rows[1]["steady_output_tok_s"] is None and rows[1]["repeat"] == 1  # 1-based, as shown


def test_config_diff():
    a = {"engine": {"kind": "vllm", "tp": 1}, "levels": [1, 8], "name": "a"}
    b = {"engine": {"kind": "sglang", "tp": 1}, "levels": [1, 8], "name": "b", "extra": 1}
    diff = {x["setting"]: x["values"] for x in q.config_diff([a, b])}
    assert diff == {"engine.kind": ["vllm", "sglang"], "name": ["a", "b"], "extra": [None, 1]}
    assert q.config_diff([a, a]) == []


def test_verdicts_and_latest_gpu_samples(history):
    db, ids = history
    v = q.recent_verdicts(db)
    assert [x["run_id"] for x in v] == sorted(ids, reverse=True)
    assert v[0]["verdict"] == "ok" and v[0]["simulated"] is True
    latest = q.latest_gpu_samples(db)
    assert len(latest) == 1 and latest[0]["run_id"] == ids[-1] and latest[0]["simulated"] is True
    assert q._worst(["ok", "throttled: power", "ok"]) == "throttled: power"
    assert q._verdict_text({"status": "warn", "reasons": ["hot", "slow"]}) == "warn: hot; slow"


def test_group_percentiles_match_numpy():
    import numpy as np

    rng = np.random.default_rng(1)
    groups = rng.integers(0, 7, 2000)
    values = rng.lognormal(3, 1, 2000)
    values[::13] = np.nan                                          # NULLs are ignored
    ids, counts, pct = q.group_percentiles(groups, values, (50, 90, 99))
    for i, g in enumerate(ids):
        v = values[(groups == g) & ~np.isnan(values)]
        assert counts[i] == v.size
        for p in (50, 90, 99):
            assert pct[p][i] == pytest.approx(np.percentile(v, p))
