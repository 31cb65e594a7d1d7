"""The non-LLM services' own traffic on Compare and Cost: stored runs (a real SQLite history, seeded through the
storage models) whose levels carry summary["services"] as bench/service_load.py writes it. Compare shows each level
and service run by run, with totals; Cost shows the whole box's $ per 1,000 ok requests at the page's price; runs
without services show neither."""
import math

import pytest

from bench.mix import SERVICE_USD
from tests.app.seed import seed_run, seed_services
from tests.app.test_pages import app, ok, texts

NAME = "<b>tts</b>"   # a user's service name: shown as given in a cell, never as markup


def _svc(name, sent, ok_, req_s, p50=None, p99=None, errors=None):
    return {"name": name, "sent": sent, "ok": ok_, "err": sent - ok_, "errors": errors or {}, "req_s": req_s,
            "window_s": 10.0, "client_lag_max_ms": 0.0, "latency_ms": {"p50": p50, "p99": p99}}


@pytest.fixture
def svc_db(db_path, monkeypatch):
    monkeypatch.setenv("MELT_DB", str(db_path))
    monkeypatch.delenv("MELT_PASSWORD", raising=False)
    # a: simulated, 2 GPUs at $3.60/h; its tts kept up at C=1, its asr failed every request at C=4
    a = seed_run(db_path, name="mix a", engine="sim", levels=(1, 4), requests_per_level=10, price=3.6, gpu_count=2)
    seed_services(db_path, a, {0: [_svc(NAME, 100, 98, 4.0, 120.0, 900.0, {"timeout after 60s": 2})],
                               1: [_svc("asr", 50, 0, 0.0, errors={"HTTP 503: model not loaded": 50})]},
                  asked={NAME: 4.0, "asr": 2.0})
    # b: measured, the same tts at C=1 only
    b = seed_run(db_path, name="mix b", engine="vllm", simulated=False, levels=(1, 4), requests_per_level=10,
                 price=2.0, seed=1)
    seed_services(db_path, b, {0: [_svc(NAME, 90, 90, 3.5, 100.0, 200.0)]})
    plain = seed_run(db_path, name="plain", engine="vllm", simulated=False, levels=(1, 4), requests_per_level=10,
                     seed=2)
    other = seed_run(db_path, name="plain 2", engine="sglang", simulated=False, levels=(1, 4), requests_per_level=10,
                     seed=3)
    return a, b, plain, other


def _frame(at, *cols):
    found = [df.value for df in at.dataframe if all(c in df.value.columns for c in cols)]
    return found[0] if found else None


def test_compare_shows_the_services_run_by_run(svc_db):
    a, b, plain, _ = svc_db
    at = ok(app("compare", runs=f"{a},{b},{plain}"))
    assert any(h.value == "Services — includes SIMULATED runs" for h in at.subheader)
    per = _frame(at, "service", "run", "ok %", "latency p99 ms")
    assert per is not None
    assert list(zip(per["concurrency"], per["service"])) == [(1, NAME), (1, NAME), (4, "asr")]
    runs = list(per["run"])
    assert runs[0].endswith("(SIMULATED)") and not runs[1].endswith("(SIMULATED)") and runs[2] == runs[0]
    first, second, asr = (per.iloc[i] for i in range(3))
    assert (first["sent"], first["ok"], first["err"], first["asked req/s"]) == (100, 98, 2, 4.0)
    assert first["ok %"] == pytest.approx(98.0) and first["latency p99 ms"] == 900.0
    assert (second["ok"], second["ok %"], second["latency p50 ms"]) == (90, pytest.approx(100.0), 100.0)
    assert math.isnan(second["asked req/s"])           # b's stored config asked nothing of it: no made-up rate
    assert (asr["ok"], asr["err"], asr["top error"]) == (0, 50, "HTTP 503: model not loaded")
    totals = _frame(at, "service", "levels", "lowest ok req/s")
    assert list(totals["service"]) == [NAME, "asr", NAME] and list(totals["err"]) == [2, 50, 0]
    caption = next(c.value for c in at.caption if c.value.startswith("No service traffic in: "))
    assert caption == "No service traffic in: H100\\-SXM · vLLM · plain."   # that run alone (markdown-escaped)


def test_compare_of_runs_without_services_shows_no_services_section(svc_db):
    _, _, plain, other = svc_db
    at = ok(app("compare", runs=f"{plain},{other}"))
    assert not any(h.value.startswith("Services") for h in at.subheader)
    assert _frame(at, "service") is None and "service traffic" not in texts(at)


def test_cost_prices_each_services_ok_requests_and_keeps_the_failed_ones(svc_db):
    a, _, plain, _ = svc_db
    at = ok(app("cost", run=a))
    svc = _frame(at, "service", SERVICE_USD)
    assert list(svc["service"]) == [NAME, "asr"]
    assert svc[SERVICE_USD].iloc[0] == pytest.approx(0.5)    # 2 GPUs x $3.60/h = $0.002/s over 4 ok req/s, x 1,000
    assert math.isnan(svc[SERVICE_USD].iloc[1])              # no ok request: no figure ...
    assert (svc["sent"].iloc[1], svc["ok"].iloc[1], svc["err"].iloc[1]) == (50, 0, 50)   # ... and every failure shown
    assert any(m.value.startswith("**Services: whole box $ per 1,000 ok requests (SIMULATED)**") for m in at.markdown)
    assert "alone paid for the box" in texts(at) and "do not add up" in texts(at)
    at.number_input(key=f"cost_price_{a}").set_value(7.2).run()
    assert _frame(ok(at), "service", SERVICE_USD)[SERVICE_USD].iloc[0] == pytest.approx(1.0)
    at.number_input(key=f"cost_gpus_{a}").set_value(1).run()
    assert _frame(ok(at), "service", SERVICE_USD)[SERVICE_USD].iloc[0] == pytest.approx(0.5)
    at = ok(app("cost", run=plain))
    assert _frame(at, "service") is None and not any("Services" in m.value for m in at.markdown)
