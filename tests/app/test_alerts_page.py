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


def test_launch_slo_search_mode_and_alert_overrides(app_db):
    from tests.app.test_pages import app as open_app

    at = ok(open_app())
    at.radio(key="l_mode").set_value("slo").run()
    ok(at)
    assert not [t for t in at.text_input if t.key == "l_levels"]       # no level list to type in this mode
    assert at.selectbox(key="l_slo_preset").value == "interactive"
    ready = " ".join(c.value for c in at.caption).replace("\\", "")
    assert "SLO search: highest concurrency with TTFT p99 <= 500 ms, TPOT p99 <= 30 ms" in ready  # 0.6B: 8B row
    at.text_area(key="l_alerts").input("ttft_p99_ms=oops").run()
    assert any("Alerts:" in e.value.replace("\\", "") for e in at.error) and at.button(key="l_start").disabled
    at.text_area(key="l_alerts").input("ttft_p99_ms=150,300").run()
    assert not [e for e in at.error if "Alerts" in e.value] and not at.button(key="l_start").disabled
