"""bench.engine_report: the engine comparison table, checked against numbers worked out by hand."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import pytest

from bench.engine_report import best_pick, build_report, engine_settings, md_escape, to_csv, to_markdown


@dataclass
class Run:
    id: int
    engine_kind: str
    model: str = "meta-llama/Llama-3.1-8B-Instruct"
    gpu: str = "H200-141GB"
    gpu_count: int = 1
    simulated: bool = False
    name: str = ""


def level(c, tok, ttft, e2e, status="completed", n_err=0):
    return {"concurrency": c, "status": status, "output_tok_s": tok, "ttft_p50_ms": ttft, "ttft_p99_ms": ttft * 2,
            "e2e_p50_ms": e2e, "e2e_p99_ms": e2e * 2, "n_err": n_err}


def cfg(**eng):
    return {"engine": eng}


RUNS = [
    (Run(1, "vllm", name="bf16"), cfg(kind="vllm", dtype="bfloat16", dummy_weights=True),
     [level(16, 1800.0, 40.0, 1100.0), level(128, 7200.0, 90.0, 2300.0), level(512, 3600.0, 900.0, 9000.0,
                                                                                status="failed")]),
    (Run(2, "vllm", name="fp8"), cfg(kind="vllm", quantization="fp8", kv_cache_dtype="fp8"),
     [level(16, 2000.0, 35.0, 1000.0), level(128, 9000.0, 80.0, 2000.0)]),
    (Run(3, "sglang"), cfg(kind="sglang", extra_args=["--enable-torch-compile"]),
     [level(16, 2100.0, 30.0, 950.0), level(128, 8000.0, 70.0, 2100.0)]),
]
PRICES = {1: 3.6, 2: 3.6, 3: 3.6}


def test_peak_levels_and_costs_by_hand():
    rep = build_report(RUNS, PRICES)
    by = {r.run_id: r for r in rep.rows}
    # peak = the completed level of highest tok/s (the failed c=512 level never counts)
    assert [by[i].concurrency for i in (1, 2, 3)] == [128, 128, 128]
    # $3.60/h = $0.001/s. At 7,200 tok/s: $0.001 / 7200 per token = $1.3889e-7 -> $1.3889e-4 per 1K tokens
    assert by[1].usd_per_1k_tokens == pytest.approx(0.001 / 7200 * 1000)
    assert by[2].usd_per_1k_tokens == pytest.approx(0.001 / 9000 * 1000)
    # daily, pro-rated: 1M tokens at 9,000 tok/s take 111.1 s of one GPU = $0.1111; 100M = $11.11
    assert by[2].daily_prorated[1_000_000] == pytest.approx(1e6 / 9000 * 0.001)
    assert by[2].daily_prorated[100_000_000] == pytest.approx(1e8 / 9000 * 0.001)
    # provisioned: 100M/day = 1,157 tok/s average, one 9,000 tok/s GPU is enough: 1 GPU x 24 h x $3.60 = $86.40
    assert by[2].daily_gpus[100_000_000] == 1 and by[2].daily_provisioned[100_000_000] == pytest.approx(86.4)
    assert by[1].ttft_p50_ms == 90.0 and by[1].e2e_p50_ms == 2300.0
    assert by[2].settings == "fp8 weights · KV fp8" and by[3].settings == "--enable-torch-compile"
    assert by[1].settings == "bfloat16 · dummy weights"
    # labels tell the two vLLM runs apart by name; one GPU, one model: no warning
    assert by[1].label != by[2].label and "fp8" in by[2].label
    assert rep.warnings == [] and rep.model == "Llama-3.1-8B-Instruct" and rep.gpu == "H200"


def test_best_pick_line():
    rep = build_report(RUNS, PRICES)
    lab = {r.run_id: r.label for r in rep.rows}
    # cheapest: fp8 at 9,000 tok/s; runner-up SGLang at 8,000: 1 - 8000/9000 = 11% cheaper per token
    # $0.000111: two significant figures below a cent ("$0.0001" would hide a 40% difference at that scale)
    assert rep.best_pick == (f"Best pick: {lab[2]} — $0.00011 per 1K output tokens, 11% below "
                             f"{lab[3]}; fastest TTFT p50: {lab[3]} (70 ms)")


def test_at_concurrency_and_left_out_runs():
    runs = RUNS + [(Run(4, "llamacpp"), cfg(kind="llamacpp"), [level(1, 50.0, 20.0, 2500.0)])]
    rep = build_report(runs, {**PRICES, 4: None}, at=16)
    assert [r.run_id for r in rep.rows] == [1, 2, 3] and all(r.concurrency == 16 for r in rep.rows)
    assert any("left out (no completed level at concurrency 16): #4" in w for w in rep.warnings)
    rep = build_report(runs, {**PRICES, 4: None})
    r4 = next(r for r in rep.rows if r.run_id == 4)
    assert r4.usd_per_1k_tokens is None and r4.daily_prorated[1_000_000] is None and r4.engine == "llama.cpp"
    assert any("no price per GPU-hour for: #4" in w for w in rep.warnings)


def test_mixed_models_gpus_and_simulated_are_said():
    runs = [RUNS[0], (Run(5, "sim", gpu="H100-SXM-80GB", model="Qwen/Qwen3-0.6B", simulated=True), cfg(kind="sim"),
                      [level(16, 99999.0, 5.0, 100.0)])]
    rep = build_report(runs, {1: 3.6, 5: 3.6})
    text = " ".join(rep.warnings)
    assert "different models" in text and "different GPUs" in text and "SIMULATED" in text
    sim = next(r for r in rep.rows if r.run_id == 5)
    assert sim.simulated and sim.label.endswith("(SIMULATED)")
    assert "(SIMULATED)" in rep.best_pick  # the cheapest is the simulated run, and the pick says so


def test_no_prices_picks_throughput():
    rep = build_report(RUNS, {})
    assert rep.best_pick.startswith("Best pick: ") and "9,000 output tok/s (no prices" in rep.best_pick
    assert best_pick([]) is None


def test_markdown_and_csv():
    rep = build_report(RUNS, PRICES)
    md = to_markdown(rep)
    lines = md.splitlines()
    assert lines[0] == "### Engine comparison: Llama-3.1-8B-Instruct on H200"
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header == ["Configuration", "Settings", "C", "TTFT p50 (ms)", "E2E p50 (ms)", "Output tok/s",
                      "$ / 1K tokens", "$/day @ 1M", "$/day @ 10M", "$/day @ 100M"]
    row2 = next(ln for ln in lines if "fp8 weights" in ln)
    cells = [c.strip() for c in row2.strip("|").split("|")]
    assert cells[2:7] == ["128", "80", "2,000", "9,000", f"{0.001 / 9000 * 1000:.5f}"]
    assert cells[9] == f"{1e8 / 9000 * 0.001:,.2f}"  # $11.11 a day for 100M tokens
    assert "**Best pick:" in md and "1 GPU(s) $86" in md
    rows = list(csv.DictReader(io.StringIO(to_csv(rep))))
    assert [int(r["run"]) for r in rows] == [1, 2, 3]
    assert float(rows[1]["usd_per_day_100M"]) == pytest.approx(1e8 / 9000 * 0.001)
    assert float(rows[1]["usd_per_day_100M_provisioned"]) == pytest.approx(86.4)
    assert rows[2]["settings"] == "'--enable-torch-compile"  # a leading '-' would be a formula in a spreadsheet


def test_user_text_is_escaped_in_markdown():
    evil = Run(9, "vllm", name="a|b <script>x</script> **bold**")
    rep = build_report([RUNS[0], (evil, cfg(dtype="bfloat16", extra_args=["--x", "|"]), [level(16, 100.0, 1.0, 2.0)])],
                       PRICES)
    md = to_markdown(rep)
    assert "<script>" not in md and "\\<script\\>" in md and "a\\|b" in md and "\\*\\*bold\\*\\*" in md
    for ln in md.splitlines():
        if ln.startswith("| ") and "script" in ln:
            assert ln.count(" | ") == 9  # the pipe in the name did not make an extra column
    assert md_escape("x\ny") == "x y"
    assert engine_settings(None) == "defaults"


def test_label_by_precision_and_short_steady_warning():
    """Two vLLM runs that differ by quantization are told apart by it (not by their names); a picked level whose
    steady window covers under half of it is named in a warning (H200, 2026-12-02: 15 s levels at 512 users)."""
    from bench.engine_report import short_steady

    runs = [(Run(1, "vllm", name="a"), cfg(), [dict(level(512, 5830.0, 1853.0, 10319.0), duration_s=22.5,
                                                     steady_s=2.8)]),
            (Run(2, "vllm", name="b"), cfg(quantization="fp8"), [dict(level(128, 6252.0, 344.0, 2017.0),
                                                                      duration_s=15.7, steady_s=8.4)])]
    rep = build_report(runs, {1: 3.79, 2: 3.79})
    assert [r.label for r in rep.rows] == ["H200", "H200 · fp8"]   # only what differs (bench.compare)
    assert rep.warnings == ["not steady state (ramp-up and drain weigh in; longer levels, e.g. --duration 60 or the "
                            "default steady-state rule, measure it): H200 at 512: a steady window of 2.8 s in "
                            "its 22 s"]
    assert short_steady({"duration_s": 20.0, "steady_s": 10.0}) is None
    assert short_steady({"duration_s": 20.0, "steady_s": None}) == "no steady window in its 20 s"
    assert short_steady({"duration_s": None}) is None


def test_small_money_keeps_two_significant_figures_without_an_exponent():
    from bench.cost import money_digits as _small

    assert [_small(v) for v in (0.0042, 0.00014, 9.05e-5, 0.000111, 0.5)] == \
        ["0.0042", "0.00014", "0.000091", "0.00011", "0.5000"]
