"""The non-LLM services' figures in Compare, Cost, `show` and the HTML report: bench.cost.usd_per_thousand_requests,
bench.mix.service_rows with a price, bench.compare.service_side_by_side / service_totals, bench.report.services_table
and the HTML report's Services section, against numbers worked out by hand."""
import pytest

from app.perf.seed import seed_run, seed_services
from bench.compare import runs_without_services, service_side_by_side, service_totals
from bench.cost import usd_per_thousand_requests
from bench.html_report import build_report
from bench.mix import SERVICE_USD, asked_rates, readable, service_rows
from bench.report import run_document, services_table


def _svc(name, sent, ok, req_s, p50=None, p99=None, errors=None, error=None):
    s = {"name": name, "sent": sent, "ok": ok, "err": sent - ok, "errors": errors or {}, "req_s": req_s,
         "window_s": 10.0, "client_lag_max_ms": 0.0,
         "latency_ms": {"p50": p50, "p99": p99} if p50 is not None else {"p50": None, "p99": None}}
    if error:
        s["error"] = error
    return s


TTS_4 = _svc("tts", 100, 98, 4.0, 120.0, 900.0, {"timeout after 60s": 2})
ASR_4 = _svc("asr", 50, 0, 0.0, errors={"HTTP 503: model not loaded": 50})
TTS_16 = _svc("tts", 200, 200, 8.0, 150.0, 400.0)
RUN_A = [{"concurrency": 4, "request_rate": None, "repeat": 0, "services": [TTS_4, ASR_4]},
         {"concurrency": 16, "request_rate": None, "repeat": 0, "services": [TTS_16]}]
CONFIG_A = {"services": [{"name": "tts", "request": {"path": "/tts", "rate": 4.0}},
                         {"name": "asr", "request": {"path": "/asr", "rate": 2.0}},
                         {"name": "idle"}]}   # a service without a request: nothing asked of it
RUN_B = [{"concurrency": 16, "request_rate": None, "repeat": 0,
          "services": [_svc("tts", 160, 150, 6.0, 300.0, 2500.0, {"over max_in_flight (8 open): the service is "
                                                                  "behind": 10})]},
         {"concurrency": 4, "request_rate": None, "repeat": 0, "services": [_svc("tts", 90, 90, 3.5, 100.0, 200.0)]}]
RUN_C = [{"concurrency": 4, "request_rate": None, "repeat": 0}]   # a single engine: no services


def test_usd_per_thousand_requests_by_hand():
    # $3.60/h = $0.001/s; at 1 ok request/s that is $0.001 per request = $1 per 1,000.
    assert usd_per_thousand_requests(1.0, 1, 3.6) == pytest.approx(1.0)
    # 2 GPUs at $3.60/h = $0.002/s over 4 ok req/s = $0.0005 per request = $0.50 per 1,000.
    assert usd_per_thousand_requests(4.0, 2, 3.6) == pytest.approx(0.5)
    assert usd_per_thousand_requests(0.0, 1, 3.6) is None     # nothing succeeded: no figure, not $0 or infinity
    assert usd_per_thousand_requests(None, 1, 3.6) is None


def test_service_rows_with_a_price_keep_failed_requests_and_price_only_ok_ones():
    rows = service_rows(RUN_A, gpu_count=2, price_per_gpu_hour=3.6)
    assert [(r["concurrency"], r["service"], r["sent"], r["ok"], r["err"]) for r in rows] == [
        (4, "tts", 100, 98, 2), (4, "asr", 50, 0, 50), (16, "tts", 200, 200, 0)]
    assert rows[0][SERVICE_USD] == pytest.approx(0.5)          # $0.002/s / 4 req/s x 1,000
    assert rows[1][SERVICE_USD] is None and rows[1]["top error"] == "HTTP 503: model not loaded"
    assert rows[2][SERVICE_USD] == pytest.approx(0.25)         # $0.002/s / 8 req/s x 1,000
    assert SERVICE_USD not in service_rows(RUN_A)[0]           # no price (Live): the column it always had, no $
    assert readable(rows)[0][SERVICE_USD] == "0.5000" and readable(rows)[1][SERVICE_USD] == "-"


def test_asked_rates_from_the_stored_config():
    assert asked_rates(CONFIG_A) == {"tts": 4.0, "asr": 2.0}
    assert asked_rates(None) == {} and asked_rates({"services": None}) == {}


def test_side_by_side_groups_each_level_and_service_with_the_runs_in_order():
    rows = service_side_by_side([("A", RUN_A, CONFIG_A), ("B", RUN_B, None), ("C", RUN_C, None)])
    # C=4 before C=16 whatever order the levels ran in; within a (level, service) the runs as given
    assert [(r["concurrency"], r["service"], r["run"]) for r in rows] == [
        (4, "tts", "A"), (4, "tts", "B"), (4, "asr", "A"), (16, "tts", "A"), (16, "tts", "B")]
    a4, b4, asr = rows[0], rows[1], rows[2]
    assert (a4["asked req/s"], a4["sent"], a4["ok"], a4["err"]) == (4.0, 100, 98, 2)
    assert a4["ok %"] == pytest.approx(98.0) and a4["ok req/s"] == 4.0
    assert (a4["latency p50 ms"], a4["latency p99 ms"], a4["top error"]) == (120.0, 900.0, "timeout after 60s")
    assert b4["asked req/s"] is None and b4["ok %"] == pytest.approx(100.0)
    assert (asr["ok"], asr["err"], asr["ok %"]) == (0, 50, 0.0)   # a service that failed every request is shown
    b16 = rows[4]
    assert b16["ok %"] == pytest.approx(93.75) and b16["top error"].startswith("over max_in_flight")   # 150 / 160
    assert service_side_by_side([("C", RUN_C, None)]) == []
    assert runs_without_services([("A", RUN_A, CONFIG_A), ("C", RUN_C, None)]) == ["C"]


def test_side_by_side_orders_rates_after_the_closed_loop_and_by_repeat():
    lv = lambda c, rate, rep: {"concurrency": c, "request_rate": rate, "repeat": rep,  # noqa: E731
                               "services": [_svc("tts", 10, 10, 1.0)]}
    rows = service_side_by_side([("A", [lv(4, 8.0, 0), lv(4, 2.0, 1), lv(4, None, 1), lv(4, 2.0, 0)], None)])
    assert [(r["rate"], r["repeat"]) for r in rows] == [(None, 2), (2.0, 1), (2.0, 2), (8.0, 1)]


def test_totals_per_run_and_service_by_hand():
    rows = service_totals([("A", RUN_A, CONFIG_A), ("B", RUN_B, None), ("C", RUN_C, None)])
    by = {(r["run"], r["service"]): r for r in rows}
    assert set(by) == {("A", "tts"), ("A", "asr"), ("B", "tts")}
    tts = by[("A", "tts")]
    assert (tts["levels"], tts["sent"], tts["ok"], tts["err"]) == (2, 300, 298, 2)
    assert tts["ok %"] == pytest.approx(100 * 298 / 300)
    assert (tts["lowest ok req/s"], tts["highest latency p99 ms"], tts["asked req/s"]) == (4.0, 900.0, 4.0)
    asr = by[("A", "asr")]
    assert (asr["sent"], asr["ok"], asr["err"], asr["ok %"], asr["lowest ok req/s"]) == (50, 0, 50, 0.0, 0.0)
    assert asr["highest latency p99 ms"] is None and asr["top error"] == "HTTP 503: model not loaded"
    b = by[("B", "tts")]
    assert (b["sent"], b["ok"], b["err"], b["lowest ok req/s"], b["highest latency p99 ms"]) == (250, 240, 10, 3.5,
                                                                                                 2500.0)


def test_a_failed_service_load_is_the_top_error_of_its_totals():
    broken = _svc("tts", 0, 0, None, error="service load stopped early: ImportError('aiohttp')")
    (row,) = service_totals([("A", [{"concurrency": 1, "services": [TTS_4]},
                                    {"concurrency": 2, "services": [broken]}], None)])
    assert row["top error"].startswith("service load stopped early") and row["err"] == 2


def _stored(db, name="<b>tts</b>", price=3.6):
    rid = seed_run(db, name="svc run", engine="vllm", simulated=False, levels=(1, 4), requests_per_level=10,
                   price=price, gpu_count=2)
    seed_services(db, rid, {0: [{**TTS_4, "name": name}], 1: [{**ASR_4, "name": "asr"}]}, asked={"asr": 2.0})
    return rid


def test_show_prints_the_services_with_their_cost(tmp_path):
    db = tmp_path / "s.db"
    doc = run_document(_stored(db), db)
    text = services_table(doc["levels"], doc["gpu_count"], doc["config"]["price_per_gpu_hour"])
    lines = text.splitlines()
    assert "box $/1K ok req" in lines[0] and "repeat" not in lines[0]
    assert "0.5000" in lines[2] and "<b>tts</b>" in lines[2]        # 2 GPUs x $3.60/h / 4 ok req/s x 1,000
    assert lines[3].split()[3:6] == ["50", "0", "50"] and "HTTP 503" in lines[3]
    assert "whole box's $/hour" in text
    assert "no price per GPU-hour" in services_table(doc["levels"], 2, None)
    assert services_table([{"concurrency": 1}], 1, 3.6) == ""


def test_html_report_has_the_services_escaped_and_priced(tmp_path):
    db = tmp_path / "h.db"
    evil = "<img src=x onerror=alert(1)>"
    page = build_report([_stored(db, name=evil)], db)
    assert "<h3>Services</h3>" in page and "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "$0.5000" in page and "HTTP 503: model not loaded" in page and "whole box&#x27;s $/hour" in page
    plain = seed_run(db, name="no services", levels=(1,), requests_per_level=5)
    assert "<h3>Services</h3>" not in build_report([plain], db)
