"""Live shows alerts (firing now for an active run, per level when finished) and the SLO search's answer, from a real
seeded SQLite history through AppTest."""
import time

from bench.alerts import AlertThresholds, evaluate
from storage.db import open_db
from storage.models import Event, Level, Run
from tests.app.seed import seed_run
from tests.app.test_pages import app, ok, texts


def _add_alerts(db, rid, *, live: bool, search: bool = False):
    with open_db(db)() as s:
        levels = s.query(Level).filter(Level.run_id == rid).order_by(Level.idx).all()
        for lv in levels:
            values = {"ttft_p99_ms": 80.0 + 70 * lv.idx, "gpu_util_min_pct": 50.0}
            lv.summary = {**(lv.summary or {}), "alerts": evaluate(values, AlertThresholds()),
                          "alert_values": values}
        if live:
            firing = evaluate({"ttft_p99_ms": 250.0, "queue_depth": 60}, AlertThresholds())
            s.add(Event(run_id=rid, t_ns=time.time_ns(), kind="alerts", message="x", payload={"alerts": firing}))
        if search:
            s.add(Event(run_id=rid, t_ns=time.time_ns(), kind="slo_search",
                        message="SLO search: highest concurrency meeting the limits = 4, goodput 9.1 req/s there",
                        payload={"best": 4}))
        s.commit()


def test_live_shows_firing_alerts_of_a_running_run(app_db):
    db, _ = app_db
    rid = seed_run(db, status="running", name="hot", levels=(1, 4, 16), requests_per_level=40)
    _add_alerts(db, rid, live=True)
    at = ok(app("live", run=rid))
    crit = [e.value.replace("\\", "") for e in at.error if "CRITICAL" in e.value]   # markdown-escaped text
    warn = [w.value.replace("\\", "") for w in at.warning if "WARNING" in w.value]
    assert any("TTFT p99 250 ms > 200 ms" in c for c in crit), [e.value for e in at.error] + [w.value for w in at.warning]
    assert any("engine queue (waiting requests) 60 > 50" in w for w in warn)
    assert "Level alerts:" in texts(at)


def test_live_finished_run_lists_alerts_per_level_and_the_search(app_db):
    db, _ = app_db
    rid = seed_run(db, name="done", levels=(1, 4, 16), requests_per_level=40)
    _add_alerts(db, rid, live=True, search=True)
    at = ok(app("live", run=rid))
    assert not [e for e in at.error if "CRITICAL" in e.value]       # finished: nothing is firing any more
    assert "Level alerts: 1 critical, 4 warning" in texts(at).replace("\\", "")       # 80/150/220 ms TTFT + 3 low-util warnings
    assert any("highest concurrency meeting the limits = 4" in i.value.replace("\\", "") for i in at.info)
    table = next(df.value for df in at.dataframe if "alert" in df.value.columns)
    assert list(table["severity"])[:2] == ["warning", "warning"]
    assert set(table["concurrency"]) == {1, 4, 16}
    assert any("TTFT p99 220 ms > 200 ms" in a for a in table["alert"])
