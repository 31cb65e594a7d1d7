"""The HTML report (bench/html_report.py) from seeded runs: hostile names cannot escape their text (HTML or the
chart JSON inside <script>), simulated runs are labelled, measured ones are not, cost appears with a price."""
import re

from app.perf.seed import seed_run
from bench.html_report import build_report, render, script_json
from bench.report import run_document, sim_error_lines

EVIL = '</script><script>alert(1)</script><img src=x onerror=alert(2)>'


def test_hostile_names_stay_text_and_simulation_is_labelled(tmp_path):
    db = tmp_path / "h.db"
    # same GPU, engine and model: the labels need the names, so the names reach the chart JSON too
    a = seed_run(db, name=EVIL, engine="vllm", simulated=False, levels=(1, 4), requests_per_level=20, price=2.0)
    b = seed_run(db, name=EVIL + " 2", engine="vllm", simulated=False, levels=(1, 4), requests_per_level=20)
    page = build_report([a, b], db)
    assert page.count("</script>") == 2 and page.count("<script>") == 2
    assert "<img" not in page and "onerror=alert(2)&gt;" in page
    assert "SIMULATED" not in page
    boot = page[page.rindex("<script>"):]
    # the name is in the charts: html-escaped for Plotly's label markup, then its & written as \u0026
    assert "\\u0026lt;/script\\u0026gt;" in boot
    assert re.search(r"\$\d+\.\d{3}", page)  # $ per 1M at run a's price
    sim = seed_run(db, name="sim run", levels=(1,), requests_per_level=10)
    page = build_report([sim], db)
    assert page.count("SIMULATED") >= 3
    assert sum("expected error" in line for line in sim_error_lines(run_document(sim, db))) == 1
    assert f'<p class="sim">{sim_error_lines(run_document(sim, db))[0]}</p>' in page
    # the expected-error line names the model when none of it was measured: escaped like every other user text
    doc = {**run_document(sim, db), "model": EVIL}
    page = render([doc], plotly_js="/*js*/")
    assert "<img" not in page and "expected error" in page and "none of " in page


def test_script_json_cannot_close_the_script_element():
    text = script_json({"x": "</script><!-- & \u2028"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text


def test_render_without_plotly_js_keeps_the_structure(tmp_path):
    db = tmp_path / "s.db"
    rid = seed_run(db, name="n", levels=(1, 2), requests_per_level=10)
    page = render([run_document(rid, db)], plotly_js="/*js*/")
    assert "/*js*/" in page and 'id="chart-tok"' in page and 'id="chart-ttft"' in page
    assert "Levels" in page and "GPU health" in page and "Config" in page
