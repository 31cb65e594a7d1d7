"""Each page's logic through streamlit.testing AppTest, against a real seeded SQLite history."""
import json
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from storage import queries as q
from tests.app.seed import seed_run

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


def app(page: str | None = None, **query) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.query_params.update({k: str(v) for k, v in query.items()})
    at.run()
    if page:
        at.switch_page(f"views/{page}.py").run()
    return at


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [t.value for t in at.title]
    parts += [w.value for w in at.warning] + [e.value for e in at.error] + [i.value for i in at.info]
    return "\n".join(parts)


def charts(at: AppTest) -> list:
    return at.get("plotly_chart")


# ------------------------------------------------------------------------------------------------------ launch
def test_launch_defaults_and_memory_fit(app_db):
    at = ok(app())
    assert at.selectbox(key="l_engine").value == "sim"
    assert at.text_input(key="l_levels").value == "1,4,16,64"
    labels = [m.label for m in at.metric]
    assert "Weights per GPU" in labels and "KV capacity (tokens / replica)" in labels
    assert len(charts(at)) == 1                                   # the memory-fit bar
    assert not at.button(key="l_start").disabled
    assert at.number_input(key="l_price").value > 0               # catalog price of the default GPU
    shown = texts(at).replace("\\", "")                           # the sim's expected error at the form's levels
    assert "SIMULATED: expected error " + _sim_band_text(64, "Qwen/Qwen3-0.6B", "H100-SXM-80GB") in shown
    at.text_input(key="l_levels").input("5000").run()
    assert "5,000 users is beyond the measured range" in texts(at).replace("\\", "")


def test_launch_offers_llama_cpp_and_says_trtllm_is_argv_only(app_db):
    at = ok(app())
    assert "llamacpp" in at.selectbox(key="l_engine").options or "llama.cpp" in " ".join(
        at.selectbox(key="l_engine").options)
    at.selectbox(key="l_engine").set_value("llamacpp").run()
    assert "one request at a time" in texts(at) and "carry no usage" in texts(at)
    at.selectbox(key="l_engine").set_value("trtllm").run()
    assert "argv-only" in texts(at) and "stub" in texts(at)


def test_launch_rejects_bad_levels(app_db):
    at = ok(app())
    at.text_input(key="l_levels").input("1,x,8").run()
    assert "Concurrency levels" in texts(at)
    assert at.button(key="l_start").disabled


def test_launch_errors_all_at_once_in_plain_words(app_db):
    at = ok(app())
    at.text_input(key="l_levels").input("0,-5").run()
    at.text_input(key="l_input_len").input("900:100").run()
    errors = [e.value for e in at.error]
    assert any(e.startswith("Concurrency levels") for e in errors)
    assert any("Input length" in e and "min \\> max" in e for e in errors)       # both at once
    assert not any("pydantic" in e or "errors\\.pydantic" in e or "input\\_value" in e for e in errors)
    assert not at.success and at.button(key="l_start").disabled  # no green "Fits" for levels that cannot run
    assert at.button(key="l_start_top").disabled and "2 setting(s) to fix" in texts(at)


def test_launch_says_when_a_level_exceeds_max_num_seqs(app_db):
    at = ok(app())
    at.text_input(key="l_levels").input("10,100000").run()
    assert any("100,000 users" in w.value and "max_num_seqs" in w.value for w in at.warning)
    assert not at.success


def test_launch_start_creates_queued_run_and_opens_live(app_db, monkeypatch):
    import bench.runs

    spawned = []
    # The worker process itself is exercised by the e2e test; here only the run row the page asks for.
    monkeypatch.setattr(bench.runs, "spawn_worker", lambda run_id, db=None, **kw: spawned.append(run_id) or 0)
    at = ok(app())
    at.text_input(key="l_levels").input("2,8").run()
    at.text_input(key="l_name").input("from the form").run()
    at.text_input(key="l_tags").input("ui, smoke").run()
    at.button(key="l_start_top").click().run()                   # the Start above the fold
    ok(at)
    assert len(spawned) == 1
    d = q.get_run(spawned[0])
    assert d.run.status == "queued" and d.run.name == "from the form" and d.run.tags == ["ui", "smoke"]
    assert d.config["levels"] == [2, 8] and d.config["engine"]["kind"] == "sim" and d.run.simulated
    assert "from the form" in texts(at)                          # now on Live, showing the new run


def test_launch_prefills_from_a_stored_run(app_db):
    db, ids = app_db
    at = ok(app(**{"from": ids[1]}))
    assert at.text_input(key="l_levels").value == "1,4,16"
    assert at.selectbox(key="l_engine").value == "vllm"
    assert at.text_input(key="l_name").value.endswith("(again)")


# -------------------------------------------------------------------------------------------------------- live
def test_live_finished_run_opens_on_levels_and_lazy_tabs(app_db):
    db, ids = app_db
    at = ok(app("live", run=ids[0]))
    assert "SIMULATED" in texts(at)
    peak = next(m for m in at.metric if m.label.startswith("Peak output tok/s"))
    assert peak.value == f"{q.get_run(ids[0]).run.peak_output_tok_s:,.0f}"
    levels = [df.value for df in at.dataframe if "concurrency" in df.value.columns]
    assert levels and list(levels[0]["concurrency"]) == ["1", "4", "16"]   # the readable view: text, units in headers
    assert "TTFT p50 ms" in levels[0].columns and "n_requested" not in levels[0].columns
    assert not levels[0].isin(["None", "nan"]).any().any()
    at.toggle(key=f"live-levels-all-{ids[0]}").set_value(True).run()
    raw = next(df.value for df in at.dataframe if "concurrency" in df.value.columns)
    assert "n_requested" in raw.columns and list(raw["concurrency"]) == [1, 4, 16]
    at.toggle(key=f"live-levels-all-{ids[0]}").set_value(False).run()
    assert len(charts(at)) == 2                                   # only the open tab runs: vs-concurrency charts
    assert not [b for b in at.button if b.label == "Cancel run"]  # finished: nothing to cancel
    at.session_state["live-tab-done"] = "Throughput & latency"
    ok(at.run())
    assert len(charts(at)) == 3 and not [df for df in at.dataframe if "n_requested" in df.value.columns]
    queue = json.loads(next(c for c in charts(at) if c.key.startswith("live-queue")).proto.spec)["layout"]
    assert queue["yaxis"]["title"]["text"] == "requests" and "yaxis3" not in queue   # no failed: no flat zero panel
    at.session_state["live-tab-done"] = "GPUs"
    ok(at.run())
    assert [c.key for c in charts(at)] == [f"live-gpu-{ids[0]}"]
    gpu = json.loads(charts(at)[0].proto.spec)["layout"]
    assert [a["text"] for a in gpu["annotations"]] == ["C=1", "C=4", "C=16"]          # level bands, as on the load charts
    at.session_state["live-tab-done"] = "Engine log & events"
    ok(at.run())
    assert any("level 1/3" in m for df in at.dataframe if "message" in df.value.columns for m in df.value["message"])


def test_live_title_and_picker_are_gpu_first(app_db):
    db, _ = app_db
    rid = seed_run(db, name="", gpu="H200-141GB", levels=(1, 4), requests_per_level=20)
    at = ok(app("live", run=rid))
    title = next(m.value for m in at.markdown if m.value.startswith("## ")).replace("\\", "")
    assert title.startswith(f"## H200 · sim · Qwen3-0.6B · #{rid}")  # not "Run · #N"
    assert at.selectbox[0].format_func(rid).startswith(f"#{rid} · H200")
    assert "prompts: text" in texts(at)                           # the default, said beside the numbers
    from storage.db import open_db
    from storage.models import Run

    with open_db(db)() as s:                                      # a config that carries the prompt format
        run = s.get(Run, rid)
        run.config = {**run.config, "workload": {**run.config["workload"], "prompt_format": "token-ids"}}
        s.commit()
    at = ok(app("live", run=rid))
    assert "prompts: token ids" in texts(at)
    assert "token-id prompts" in next(m.value for m in at.markdown if m.value.startswith("## ")).replace("\\", "")


def _sim_band_text(c: int, model: str, gpu: str) -> str:
    """The figures a simulated level at c users must show, from the calibration asset's rows (max |error| at the
    log-nearest measured concurrency, this model and GPU when measured)."""
    import math

    from engines.sim.accuracy import load_accuracy, pct

    rows = load_accuracy().rows
    rows = [r for r in rows if r.model == model] or rows
    rows = [r for r in rows if r.gpu == gpu] or rows
    near = min({r.concurrency for r in rows}, key=lambda m: (abs(math.log(c / m)), -m))
    at = [r for r in rows if r.concurrency == near]
    return (f"{pct(max(abs(r.output_tok_s_error) for r in at))} output tok/s, "
            f"{pct(max(abs(r.mean_ttft_error) for r in at))} mean TTFT")


def test_live_simulated_run_shows_its_expected_error(app_db):
    db, ids = app_db
    rid = seed_run(db, name="sim err", gpu="H200-141GB", levels=(1, 100), requests_per_level=20)
    shown = texts(ok(app("live", run=rid))).replace("\\", "")
    assert "SIMULATED: expected error " + _sim_band_text(1, "Qwen/Qwen3-0.6B", "H200-141GB") + " at 1 user" in shown
    assert (_sim_band_text(100, "Qwen/Qwen3-0.6B", "H200-141GB") + " at 100 users, nearest measured 128") in shown
    measured = seed_run(db, name="real", engine="vllm", simulated=False, levels=(1,), requests_per_level=10)
    assert "expected error" not in texts(ok(app("live", run=measured)))


def test_deep_link_opens_live(app_db):
    db, ids = app_db
    at = ok(app(run=ids[1]))                                      # http://host/?run=ID
    assert f"#{ids[1]}" in texts(at)
    assert any("output tok/s" in m.label.lower() for m in at.metric)


def test_live_running_run_progress_and_cancel(app_db):
    db, _ = app_db
    rid = seed_run(db, status="running", name="in flight", levels=(1, 4, 16), requests_per_level=100)
    at = ok(app("live", run=rid))
    bars = at.get("progress")
    assert len(bars) == 4                                         # sweep + one per level
    assert [c.key for c in charts(at)] == [f"live-tok-{rid}", f"live-lat-{rid}", f"live-queue-{rid}"]  # load tab
    assert at.segmented_control(key="live_refresh").value == 1.0
    cancel = [b for b in at.button if b.label == "Cancel run"]
    assert cancel
    cancel[0].click().run()
    ok(at)
    assert q.get_run(rid).run.status == "cancelled"               # no live worker: marked cancelled directly


def test_live_keeps_the_watched_charts_when_the_run_ends(app_db):
    from storage.db import open_db
    from storage.models import Run, RunStatus

    db, _ = app_db
    rid = seed_run(db, status="running", name="watched", levels=(1, 4), requests_per_level=40)
    at = ok(app("live", run=rid))
    assert [c.key for c in charts(at)][0] == f"live-tok-{rid}"
    with open_db(db)() as s:                                      # the worker finishes the run
        run = s.get(Run, rid)
        run.status, run.finished_at = RunStatus.completed, run.started_at
        s.commit()
    ok(at.run())
    assert [c.key for c in charts(at)] == [f"live-tok-{rid}", f"live-lat-{rid}", f"live-queue-{rid}"]
    # a viewer who opens the finished run cold still starts on its Levels
    cold = ok(app("live", run=rid))
    assert not charts(cold) and any("TTFT p50 ms" in df.value.columns for df in cold.dataframe)


def test_presentation_view(app_db):
    db, _ = app_db
    rid = seed_run(db, status="running", name="on the projector", levels=(1, 4, 16), requests_per_level=60)
    at = ok(app("live", run=rid, present=1))
    assert [c.key for c in charts(at)] == [f"present-tok-{rid}", f"present-lat-{rid}"]
    assert not at.selectbox and not at.tabs                       # no picker, no tabs: just the run
    assert any(m.label.startswith("Output tok/s") for m in at.metric)
    assert "SIMULATED" in texts(at) and len(at.get("progress")) == 1
    finished = ok(app("live", run=app_db[1][0], present=1))       # a finished run: the same two charts, peak tiles
    assert len(charts(finished)) == 2 and any(m.label.startswith("Peak output") for m in finished.metric)


def test_live_page_reaps_a_run_whose_worker_dies_while_watched(app_db):
    """A worker killed while its Live page is open: the next refresh marks the run aborted (its pid is certainly
    gone), without waiting for the 30 s heartbeat window or a new browser session."""
    import socket
    import subprocess
    import sys

    from storage.models import utcnow
    from storage.recorder import Recorder

    db, _ = app_db
    rid = seed_run(db, status="running", name="watched", levels=(1, 4), requests_per_level=20)
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        Recorder(rid, db).update_run(worker_pid=worker.pid, heartbeat_at=utcnow(),
                                     host={"hostname": socket.gethostname()})
        at = ok(app("live", run=rid))
        assert q.get_run(rid).run.status == "running"               # a live worker is left alone
    finally:
        worker.kill()
        worker.wait()
    ok(at.run())
    assert q.get_run(rid).run.status == "aborted"
    assert "ended without finishing" in texts(at)


def test_user_text_is_escaped(app_db):
    db, _ = app_db
    rid = seed_run(db, name="evil [click](http://x.example) <img src=x>", tags=["**bold**"])
    at = ok(app("live", run=rid))
    md = "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption])
    # Every markdown/HTML trigger arrives backslash-escaped (so it renders as the literal text).
    assert not re.search(r"(?<!\\)[\[<*]", md.replace(":orange-badge[", "").replace(":green-badge[", "")
                         .replace(":blue-badge[", "").replace(":gray-badge[", ""))
    assert r"\[click\]" in md and r"\<img" in md and r"\*\*bold\*\*" in md
    assert "http://" not in md                                   # autolink broken up (zero-width space)


# -------------------------------------------------------------------------------------------------------- runs
def _select_rows(at: AppTest, rows: list[int]) -> AppTest:
    key = next(k for k in at.session_state.keys() if str(k).startswith("r_table"))
    at.session_state[key] = {"selection": {"rows": rows, "columns": [], "cells": []}}
    return at.run()


def test_runs_table_filters(app_db):
    db, ids = app_db
    at = ok(app("runs"))
    table = at.dataframe[0].value
    assert list(table["id"]) == sorted(ids, reverse=True)
    assert set(table["data"]) == {"SIMULATED", "measured"}
    at.text_input(key="r_search").input("vllm").run()
    assert list(at.dataframe[0].value["id"]) == [ids[1]]
    at.text_input(key="r_search").input("").run()
    at.segmented_control(key="r_kind").set_value("simulated").run()
    assert set(at.dataframe[0].value["data"]) == {"SIMULATED"}


def test_runs_edit_and_delete_with_confirmation(app_db):
    db, ids = app_db
    at = ok(app("runs"))
    ok(_select_rows(at, [0]))                                     # newest = ids[-1]
    target = ids[-1]
    # A form: set the fields, then submit them together.
    at.text_input[[t.label for t in at.text_input].index("Name")].input("renamed")
    at.text_area[0].input("notes here")
    at.button[[b.label for b in at.button].index("Save")].click().run()
    ok(at)
    r = q.get_run(target).run
    assert (r.name, r.notes) == ("renamed", "notes here")
    at.button(key="r_delete").click().run()
    assert "cannot be undone" in texts(at)
    assert q.get_run(target) is not None                          # nothing deleted before confirming
    at.button(key="r_delete_yes").click().run()
    ok(at)
    assert q.get_run(target) is None and q.get_run(ids[0]) is not None


def test_run_again_shows_a_stored_engine_command_and_asks_first(app_db, monkeypatch):
    """A shared history file is someone else's data: its engine command is shown, nothing runs until confirmed."""
    import bench.runs
    from storage.db import open_db
    from storage.models import Run

    db, ids = app_db
    target = ids[-1]
    with open_db(db)() as s:
        run = s.get(Run, target)
        run.config = {**run.config, "engine": {**run.config["engine"], "kind": "vllm", "model": "m",
                                                "engine_cmd": ["/bin/sh", "-c", "touch /tmp/pwned"]}}
        s.commit()
    spawned = []
    monkeypatch.setattr(bench.runs, "spawn_worker", lambda run_id, db=None, **kw: spawned.append(run_id) or 0)
    at = ok(app("runs"))
    ok(_select_rows(at, [0]))
    at.button(key=f"r_again_{target}").click().run()
    ok(at)
    assert spawned == [] and "launches this command" in texts(at)
    assert any("/bin/sh -c 'touch /tmp/pwned'" in c.value for c in at.code)
    at.button(key="r_again_no").click().run()
    assert spawned == [] and "launches this command" not in texts(at)
    at.button(key=f"r_again_{target}").click().run()
    at.button(key="r_again_yes").click().run()
    ok(at)
    assert len(spawned) == 1 and q.get_run(spawned[0]).config["engine"]["engine_cmd"][0] == "/bin/sh"


# ----------------------------------------------------------------------------------------------- compare, cost
def test_compare_two_runs(app_db):
    db, ids = app_db
    at = ok(app("compare", runs=f"{ids[0]},{ids[1]}"))
    assert at.multiselect(key="c_runs").value == [ids[0], ids[1]]
    assert [c.key for c in charts(at)] == ["c-tok"]               # lazy tabs: only the open tab's chart is sent
    side = next(df.value for df in at.dataframe if "configuration" in df.value.columns)
    assert len(side) == 2 and any("SIMULATED" in c for c in side["configuration"])
    assert "SIMULATED: expected error " + _sim_band_text(16, "Qwen/Qwen3-0.6B", "H100-SXM-80GB") in texts(at).replace(
        "\\", "")                                                   # ids[0] is a sim run: its levels' error
    assert not any("setting" in df.value.columns for df in at.dataframe)  # config diff: a lazy expander
    at.session_state["c_diff_open"] = True
    at.run()
    diff = next(df.value for df in at.dataframe if "setting" in df.value.columns)
    assert "engine.kind" in set(diff["setting"])
    at.selectbox(key="c_at").set_value(4).run()
    side = next(df.value for df in at.dataframe if "configuration" in df.value.columns)
    assert set(side["concurrency"]) == {4}


def test_compare_labels_verdict_and_cost(app_db):
    db, ids = app_db
    a, b = q.get_run(ids[0]).run, q.get_run(ids[1]).run           # sim vs vLLM, same GPU and model
    at = ok(app("compare", runs=f"{ids[0]},{ids[1]}"))
    legends = {t["name"] for c in charts(at) for t in json.loads(c.proto.spec)["data"]}
    assert {"H100-SXM · sim (SIMULATED)", "H100-SXM · vLLM"} <= legends  # what differs, GPU first
    fast, slow = (b, a) if b.peak_output_tok_s > a.peak_output_tok_s else (a, b)
    gain = round((fast.peak_output_tok_s / slow.peak_output_tok_s - 1) * 100)
    heads = [m.value.replace("\\", "") for m in at.markdown if m.value.startswith("####")]
    assert heads and f"{gain:+d}% peak tok/s" in heads[0] and "per 1M tokens" in heads[0]
    side = next(df.value for df in at.dataframe if "configuration" in df.value.columns)
    peak = side.loc[side["run"] == f"#{fast.id}"].iloc[0]
    assert peak["$ / 1M output tokens"] == pytest.approx(fast.price_per_gpu_hour / 3600 / peak["output tok/s"] * 1e6)
    for tab, key in (("$ per 1M tokens", "c-usd"), ("Throughput vs latency", "c-pareto"),
                     ("Latency", "c-lat-chart")):
        at.session_state["c_chart_tab"] = tab                      # a click on the tab (on_change="rerun")
        at.run()
        assert [c.key for c in charts(at)] == ([key] if key else []), tab
        legends |= {t["name"] for c in charts(at) for t in json.loads(c.proto.spec)["data"]}
    assert {"H100-SXM · sim (SIMULATED)", "H100-SXM · vLLM"} <= legends
    at.segmented_control(key="c_lat").set_value("TPOT").run()
    assert any("TPOT p50" in json.loads(c.proto.spec)["layout"]["title"]["text"] for c in charts(at))


def test_compare_labels_with_user_names_are_escaped(app_db):
    db, _ = app_db
    a = seed_run(db, name="evil [x](http://e.example)", speed=1.2, seed=5)
    b = seed_run(db, name="<b>bold</b>", seed=6)                  # same GPU, engine, model: names tell them apart
    at = ok(app("compare", runs=f"{a},{b}"))
    head = next(m.value for m in at.markdown if m.value.startswith("####"))
    assert r"evil \[x\]\(http" in head and r"\<b\>bold" in head and "http://" not in head
    legends = {t["name"] for c in charts(at) for t in json.loads(c.proto.spec)["data"]}
    assert "H100-SXM · &lt;b&gt;bold&lt;/b&gt; (SIMULATED)" in legends   # Plotly text HTML-escaped


def test_compare_engine_comparison_table(app_db):
    db, _ = app_db
    a = seed_run(db, name="vllm bf16", engine="vllm", model="meta-llama/Llama-3.1-8B-Instruct", gpu="H200-141GB",
                 speed=1.0, seed=7, price=3.6)
    b = seed_run(db, name="vllm fp8", engine="vllm", model="meta-llama/Llama-3.1-8B-Instruct", gpu="H200-141GB",
                 speed=1.4, seed=8, price=3.6)
    c = seed_run(db, name="sim", engine="sim", model="meta-llama/Llama-3.1-8B-Instruct", gpu="H200-141GB",
                 speed=1.2, seed=9, price=3.6)
    at = ok(app("compare", runs=f"{a},{b},{c}"))
    eng = next(df.value for df in at.dataframe if "usd_per_1k_tokens" in df.value.columns)
    assert len(eng) == 3 and {"usd_per_day_1M", "usd_per_day_10M", "usd_per_day_100M"} <= set(eng.columns)
    for _, row in eng.iterrows():  # $ per 1K at $3.60/h = $0.001/s: 1 / tok/s
        assert row["usd_per_1k_tokens"] == pytest.approx(0.001 / row["output_tok_s"] * 1000)
        assert row["usd_per_day_100M"] == pytest.approx(row["usd_per_1k_tokens"] * 100_000)
    peak_b = max(lv.output_tok_s or 0 for lv in q.get_run(b).levels if lv.status == "completed")
    assert eng.loc[eng["run"] == b, "output_tok_s"].iloc[0] == pytest.approx(peak_b)
    sim_row = eng.loc[eng["run"] == c].iloc[0]
    assert bool(sim_row["simulated"]) and sim_row["configuration"].endswith("(SIMULATED)")
    pick = next(m.value for m in at.markdown if m.value.startswith("**Best pick"))
    assert "per 1K output tokens" in pick
    assert any("SIMULATED" in w.value for w in at.warning)
    at.selectbox(key="c_eng_at").set_value(4).run()
    eng = next(df.value for df in at.dataframe if "usd_per_1k_tokens" in df.value.columns)
    assert set(eng["concurrency"]) == {4}


def test_compare_says_which_runs_are_missing(app_db):
    db, ids = app_db
    at = ok(app("compare", runs=f"{ids[0]},999"))
    assert "#999" in "\n".join(w.value for w in at.warning)
    assert ids[0] in at.multiselect(key="c_runs").value


def test_compare_with_one_run_adds_a_partner(app_db):
    db, ids = app_db
    at = ok(app("compare", runs=ids[1]))                          # "Compare with others" on Live
    picked = at.multiselect(key="c_runs").value
    assert picked[0] == ids[1] and len(picked) == 2 and "Select at least two" not in texts(at)
    assert any("configuration" in df.value.columns for df in at.dataframe)


def test_cost_page_numbers_follow_price(app_db):
    db, ids = app_db
    at = ok(app("cost", run=ids[0]))
    d = q.get_run(ids[0])
    per_level = next(df.value for df in at.dataframe if "usd_per_m_output" in df.value.columns)
    lv = d.levels[0]
    price = d.run.price_per_gpu_hour
    assert per_level["usd_per_m_output"].iloc[0] == pytest.approx(price / 3600 / lv.output_tok_s * 1e6)
    key = f"cost_price_{ids[0]}"
    at.number_input(key=key).set_value(price * 2).run()
    per_level2 = next(df.value for df in at.dataframe if "usd_per_m_output" in df.value.columns)
    assert per_level2["usd_per_m_output"].iloc[0] == pytest.approx(2 * per_level["usd_per_m_output"].iloc[0])
    assert any(m.label.startswith("Cheapest level meeting SLOs") for m in at.metric)
    daily = next(df.value for df in at.dataframe if "GPUs" in df.value.columns)
    assert list(daily["output tokens/day"]) == ["1M", "10M", "100M"]
    assert "SIMULATED" in texts(at)


def test_cost_several_runs_side_by_side(app_db):
    db, ids = app_db
    at = ok(app("cost", runs=f"{ids[0]},{ids[1]}"))
    assert at.multiselect(key="cost_runs").value == [ids[0], ids[1]]
    by_run = next(df.value for df in at.dataframe if "cheapest level meeting SLOs" in df.value.columns)
    assert list(by_run["id"]) == [f"#{ids[0]}", f"#{ids[1]}"]
    assert charts(at) == []                                       # the chart is a lazy tab
    at.session_state["cost_runs_tab"] = "$ per 1M vs concurrency"
    at.run()
    assert [c.key for c in charts(at)] == ["cost-runs-chart"]
    at.session_state["cost_runs_tab"] = "By run"
    at.run()
    head = next(m.value for m in at.markdown if m.value.startswith("####")).replace("\\", "")
    cheaper = by_run.loc[by_run["$ / 1M output tokens there"].idxmin(), "run"]
    assert head.startswith(f"#### Cheapest per token meeting the SLOs: {cheaper} at C=")
    # doubling one run's price doubles its $ per 1M tokens (the other run's stays)
    before = by_run.set_index("id")["$ / 1M output tokens there"]
    at.number_input(key=f"cost_price_{ids[1]}").set_value(at.number_input(key=f"cost_price_{ids[1]}").value * 2).run()
    after = next(df.value for df in at.dataframe if "cheapest level meeting SLOs" in df.value.columns).set_index("id")
    assert after.loc[f"#{ids[1]}", "$ / 1M output tokens there"] == pytest.approx(2 * before[f"#{ids[1]}"])
    assert after.loc[f"#{ids[0]}", "$ / 1M output tokens there"] == pytest.approx(before[f"#{ids[0]}"])
    at.selectbox(key="cost_detail").set_value(ids[1]).run()        # daily cost for the second run ...
    assert any(h.value.startswith("Daily cost — ") for h in at.subheader)
    at.multiselect(key="cost_runs").set_value([ids[0], ids[2]]).run()  # ... then that run leaves the selection
    ok(at)
    assert at.selectbox(key="cost_detail").value == ids[0]


def test_cost_slo_preset_and_where_latency_breaks(app_db):
    db, _ = app_db
    rid = seed_run(db, levels=(1, 64, 512), requests_per_level=100)  # TTFT grows ~0.9 ms per user: 512 is slow
    at = ok(app("cost", run=rid))
    at.selectbox(key="cost_preset").set_value("none").run()
    assert at.number_input(key="cost_ttft").value == 0
    met = next(df.value for df in at.dataframe if "meets_slo" in df.value.columns)
    assert met["meets_slo"].all()                                 # no SLO: every level qualifies
    at.selectbox(key="cost_preset").set_value("MLPerf interactive (p99 TTFT 450 ms, TPOT 40 ms)").run()
    assert (at.number_input(key="cost_ttft").value, at.number_input(key="cost_tpot").value) == (450, 40)
    levels = next(df.value for df in at.dataframe if "meets_slo" in df.value.columns)
    lv = {x.concurrency: x.summary for x in q.get_run(rid).levels}
    assert list(levels["meets_slo"]) == [lv[c]["ttft_ms"]["p99"] <= 450 and lv[c]["tpot_ms"]["p99"] <= 40
                                         for c in levels["concurrency"]]
    assert list(levels["meets_slo"]) == [True, True, False]
    assert "Latency breaks at C = 512: ttft\\_ms p99" in texts(at)


def test_cost_unknown_run_says_not_found(app_db):
    at = ok(app("cost", run=999))
    assert "#999" in "\n".join(e.value for e in at.error)
    assert at.multiselect(key="cost_runs").value == []            # not silently another run
    assert not any("usd_per_m_output" in df.value.columns for df in at.dataframe)


def test_gpus_page_without_nvml(app_db):
    db, ids = app_db
    at = ok(app("gpus"))                                          # newest run (#3) is a measured sglang run
    heads = [h.value for h in at.subheader]
    assert f"Latest samples, run #{ids[-1]}" in heads
    verdicts = next(df.value for df in at.dataframe if "verdict" in df.value.columns)
    assert list(verdicts["data"]) == ["measured", "measured", "SIMULATED"]
    seed_run(db, name="sim last")                                 # now the newest samples are simulated
    at = ok(app("gpus"))
    assert any(h.endswith("— SIMULATED") for h in (x.value for x in at.subheader))
    assert "(SIMULATED)" in "\n".join(m.value for m in at.markdown)
    assert "**GPU 0 · H100-SXM**" in "\n".join(m.value for m in at.markdown).replace("\\", "")  # the model, named
    verdicts = next(df.value for df in at.dataframe if "verdict" in df.value.columns)
    assert set(verdicts["verdict"]) == {"ok"} and set(verdicts["other levels"]) == {"–"}  # not repeated per level


# ---------------------------------------------------------------------------------------------------- password
def test_password_gate(app_db, monkeypatch):
    monkeypatch.setenv("MELT_PASSWORD", "s3cret")
    at = ok(app())
    assert [t.label for t in at.text_input] == ["Password"]      # nothing else renders
    at.text_input[0].input("wrong")
    at.button[0].click().run()
    assert "Wrong password" in texts(at)
    at.text_input[0].input("s3cret")
    at.button[0].click().run()
    ok(at)
    assert at.selectbox(key="l_engine").value == "sim"


def test_repeated_wrong_passwords_are_slowed_down(app_db, monkeypatch):
    monkeypatch.setenv("MELT_PASSWORD", "s3cret")
    at = ok(app())
    for _ in range(3):
        at.text_input[0].input("guess")
        at.button[0].click().run()
        assert "Wrong password" in texts(at)
    at.text_input[0].input("s3cret")                           # even the right one waits its turn now
    at.button[0].click().run()
    assert "Too many wrong passwords" in texts(at) and [t.label for t in at.text_input] == ["Password"]
    from app.ui.common import _login_throttle

    _login_throttle().succeeded()                              # the process-wide counter, for the tests after


def test_password_from_streamlit_secrets(app_db):
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.secrets["password"] = "from-secrets"
    ok(at.run())
    assert [t.label for t in at.text_input] == ["Password"]
    at.text_input[0].input("from-secrets")
    at.button[0].click().run()
    ok(at)
    assert at.selectbox(key="l_engine").value == "sim"


def test_gpus_page_with_nvml_gpus(app_db, monkeypatch):
    """The NVML branch. No GPU on this machine: NVML's answers are stood in with the shapes telemetry.nvml returns
    (list_gpus / read_sample / health_facts); the real calls are exercised on the GPU machine (pytest -m gpu)."""
    import app.ui.common as common
    import telemetry.nvml as nvml

    gpus = [{"index": 0, "uuid": "GPU-0", "name": "NVIDIA H100 80GB HBM3", "memory_total_mb": 81559.0,
             "driver": "580.1", "cuda": "13.0", "mig_devices": []}]
    monkeypatch.setattr(common, "detected_gpus", lambda: (gpus, "NVML ok: driver 580.1, CUDA 13.0, 1 GPU(s)"))
    sample = {k: None for k in nvml.SAMPLE_KEYS} | {"gpu_index": 0, "util_gpu": 97.0, "power_w": 776.0,
                                                    "power_avg_w": 695.0, "temp_gpu_c": 64.0, "mem_used_mb": 70000.0,
                                                    "mem_total_mb": 81559.0, "sm_clock_mhz": 1350.0}
    monkeypatch.setattr(nvml, "read_sample", lambda i: dict(sample))
    monkeypatch.setattr(nvml, "health_facts", lambda i: {"available": True, "ecc_mode": True})
    at = ok(app("gpus"))
    shown = {m.label: m.value for m in at.metric}
    assert shown["Power"] == "695 W"                              # the 1 s average, as the charts use
    assert shown["Utilization"] == "97 %" and shown["Memory"] == "68.4 / 80 GiB"
    assert "SIMULATED" not in "\n".join(m.value for m in at.markdown)
    assert any("name" in df.value.columns for df in at.dataframe)


def test_launch_can_send_a_run_to_a_live_agent(app_db, monkeypatch):
    """The Launch page lists the history's live agents; a run sent to one is queued for it (no local worker)."""
    import bench.runs
    from storage.agents import register_agent
    from storage.db import open_db

    spawned = []
    monkeypatch.setattr(bench.runs, "spawn_worker", lambda run_id, db=None, **kw: spawned.append(run_id) or 0)
    register_agent(open_db(app_db[0]), "gpu-box-1", "gpu-host", 4321)
    at = ok(app())
    assert at.selectbox(key="l_run_on").options == ["This machine", "gpu-box-1"]
    at.selectbox(key="l_run_on").select("gpu-box-1").run()
    at.text_input(key="l_name").input("remote one").run()
    at.button(key="l_start").click().run()
    ok(at)
    assert spawned == []  # nothing started here
    d = next(r for r in q.list_runs() if r.name == "remote one")
    assert d.status == "queued"
    from storage.models import Run

    with open_db(app_db[0])() as s:
        assert s.get(Run, d.id).target_agent == "gpu-box-1"
    assert "Queued for agent **gpu\\-box\\-1**" in texts(at)  # Live says who will run it (name escaped)


def test_launch_asks_for_gpu_holders_once_per_10_s(app_db, monkeypatch):
    """bench.gpu_holders.holders (a reap, NVML, psutil) is cached: reruns of the form do not repeat it."""
    import bench.gpu_holders as gh
    from app.ui.common import gpu_holders

    calls = []
    monkeypatch.setattr(gh, "holders", lambda db=None, gpus=None, found=None: (calls.append(gpus), ([], None))[1])
    gpu_holders.clear()
    at = ok(app())
    at.selectbox(key="l_engine").set_value("vllm").run()
    for levels in ("1,2", "1,2,4", "8"):                          # three more reruns of the form
        at.text_input(key="l_levels").set_value(levels).run()
    ok(at)
    assert len(calls) == 1
    gpu_holders.clear()
