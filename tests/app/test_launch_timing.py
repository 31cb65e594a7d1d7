"""The Launch page's level-timing controls (stop rule, arrivals with rates and burstiness, ramp-up, repeats) make the
run config the worker gets."""
from pathlib import Path

from streamlit.testing.v1 import AppTest

from storage import queries as q

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


def test_rate_sweep_with_burstiness_and_repeats_from_the_form(app_db, monkeypatch):
    import bench.runs

    spawned = []
    monkeypatch.setattr(bench.runs, "spawn_worker", lambda run_id, db=None, **kw: spawned.append(run_id) or 0)
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.run()
    assert at.radio(key="l_stop_by").value == "steady" and at.text_input(key="l_ramp_up").value == "auto"
    at.radio(key="l_arrivals").set_value("rate").run()
    at.text_input(key="l_rates").input("5,10").run()
    at.number_input(key="l_burstiness").set_value(0.5).run()
    at.number_input(key="l_repeat").set_value(2).run()
    at.number_input(key="l_min_steady_s").set_value(12.0).run()
    at.text_input(key="l_levels").input("64").run()
    assert at.checkbox(key="l_connect_at_go").value is False          # Melt pre-connects unless asked
    at.checkbox(key="l_connect_at_go").check().run()
    at.button(key="l_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    w = q.get_run(spawned[0]).config["workload"]
    assert w["rates"] == [5.0, 10.0] and w["burstiness"] == 0.5 and w["min_steady_s"] == 12.0
    assert w["preconnect"] is False
    assert w["requests"] is None and w["duration_s"] is None
    assert q.get_run(spawned[0]).config["repeat"] == 2
