"""Projection from a measurement (bench/project.py, `./melt project`), on real stored runs: the H200 lease's vLLM
0.25.1 sweeps (docs/data/h200_engines/melt_engines.db.gz: run 3 is Llama-3.1-8B bf16 at 1, 16, 128, 512 users, run 1
SGLang), opened through Melt's own migrations into a temporary SQLite file."""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from bench.project import (ProjectionError, expected_lines, knobs_of, load_source, project, save_projection,
                           source_of, table)

ROOT = Path(__file__).resolve().parents[2]
ENGINES_DB = ROOT / "docs/data/h200_engines/melt_engines.db.gz"
LLAMA, SGLANG = 3, 1


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> Path:
    """A copy of the stored history, migrated to the current schema (so the new projection column is added by the
    migration, as for any user's older history)."""
    p = tmp_path_factory.mktemp("proj") / "engines.db"
    with gzip.open(ENGINES_DB) as src, open(p, "wb") as dst:
        shutil.copyfileobj(src, dst)
    from storage.db import open_db

    open_db(str(p))
    return p


@pytest.fixture(scope="module")
def llama(stored):
    """Run 3 fitted and projected to the H100 and back onto its own H200 (one fit for the module's tests)."""
    # the H100 named twice (ids match case-insensitively) is one target
    return project(LLAMA, ["H100-SXM-80GB", "h100-sxm-80gb", "H200-141GB"], str(stored))


def test_the_source_is_read_from_the_run(stored):
    src = load_source(LLAMA, str(stored))
    assert (src.gpu, src.model, src.input_len, src.output_len, src.text_prompt) == \
        ("H200-141GB", "meta-llama/Llama-3.1-8B-Instruct", 512, 128, True)
    assert [lv.concurrency for lv in src.levels] == [1, 16, 128, 512]
    assert all(lv.output_tok_s > 0 and lv.mean_ttft_ms > 0 and lv.requests > 0 for lv in src.levels)


def test_refusals_say_why(stored):
    with pytest.raises(ProjectionError, match="ran 'sglang'.*vLLM only"):
        load_source(SGLANG, str(stored))
    with pytest.raises(ProjectionError, match="run #999 not found"):
        load_source(999, str(stored))
    with pytest.raises(ProjectionError, match="unknown target GPU 'H900'"):
        project(LLAMA, ["H900"], str(stored))

    class Run:   # the fields source_of reads, one wrong at a time
        id, uuid, name, simulated, engine_kind, gpu, gpu_count, model = 7, None, "", False, "vllm", "H200-141GB", 1, \
            "Qwen/Qwen3-0.6B"
        config = {"engine": {"kind": "vllm", "model": "Qwen/Qwen3-0.6B", "tp": 1}, "levels": [1],
                  "workload": {"input_len": {"min": 512, "max": 512}, "output_len": {"min": 128, "max": 128}}}

    def refused(**kw):
        r = Run()
        for k, v in kw.items():
            setattr(r, k, v)
        with pytest.raises(ProjectionError) as e:
            source_of(r, [])
        return str(e.value)

    assert "simulated" in refused(simulated=True)
    assert "not a catalog GPU" in refused(gpu="RTX 9999")
    assert "not in the catalog" in refused(model="someone/unknown-model")
    assert "length ranges" in refused(config={"workload": {"input_len": {"min": 100, "max": 900},
                                                           "output_len": {"min": 128, "max": 128}}})
    assert "2 GPUs" in refused(config={**Run.config, "engine": {**Run.config["engine"], "tp": 2}})
    assert "'chat' endpoint" in refused(config={**Run.config, "workload": {**Run.config["workload"],
                                                                           "endpoint": "chat"}})
    assert "shared prefix" in refused(config={**Run.config, "workload": {**Run.config["workload"], "prefix_len": 64}})
    assert "several instances" in refused(config={**Run.config, "instances": [{}, {}]})
    assert "does not model" in refused(config={**Run.config, "engine": {**Run.config["engine"],
                                                                        "quantization": "bitsandbytes-9bit"}})
    assert "does not validate" in refused(config={**Run.config, "levels": []})
    assert "no completed closed-loop level" in refused()


def test_levels_that_measured_something_else_are_left_out_and_repeats_averaged():
    from types import SimpleNamespace as NS

    class Run:
        id, uuid, name, simulated, engine_kind, gpu, gpu_count, model = 8, None, "", False, "vllm", "H200-141GB", 1, \
            "Qwen/Qwen3-0.6B"
        config = {"engine": {"kind": "vllm", "model": "Qwen/Qwen3-0.6B"}, "levels": [1, 16],
                  "workload": {"input_len": {"min": 512, "max": 512}, "output_len": {"min": 128, "max": 128}}}

    def lv(c, tok, ttft, status="completed", n_err=0, client_bound=False, rate=None, ramp=0.0, n_ok=100):
        return NS(concurrency=c, request_rate=rate, status=NS(value=status), n_err=n_err, client_bound=client_bound,
                  output_tok_s=tok, n_ok=n_ok, summary={"ttft_ms": {"mean": ttft}, "ramp_s": ramp})

    src = source_of(Run(), [lv(1, 400, 15), lv(16, 4000, 60, ramp=0.75), lv(16, 5000, 80, ramp=0.75, n_ok=120),
                            lv(128, 9000, 300, status="failed"), lv(128, 9000, 300, n_err=3),
                            lv(256, 9000, 300, client_bound=True), lv(64, 9000, 300, rate=10.0)])
    assert [(x.concurrency, x.repeats) for x in src.levels] == [(1, 1), (16, 2)]
    assert src.levels[1].output_tok_s == 4500 and src.levels[1].mean_ttft_ms == 70 and src.levels[1].requests == 110
    assert src.levels[1].ramp_s == 0.75
    assert [s.split(":")[0] for s in src.skipped] == ["c=128", "c=128", "c=256", "c=64"]
    assert "3 failed requests" in src.skipped[1] and "client-bound" in src.skipped[2]


def test_the_runs_engine_settings_are_the_sims():
    k, notes = knobs_of({"quantization": "fp8", "max_seqs": 128, "kv_cache_dtype": "fp8", "mem_fraction": 0.8,
                         "extra_args": ["--max-num-batched-tokens", "2048", "--no-enable-prefix-caching",
                                        "--enable-chunked-prefill=False"]}, 1)
    assert (k.weight_dtype, k.max_num_seqs, k.kv_cache_dtype, k.mem_fraction, k.max_num_batched_tokens) == \
        ("fp8", 128, "fp8", 0.8, 2048)
    assert notes == ("engine arguments the sim does not model: --enable-chunked-prefill=False",)
    k, notes = knobs_of({"dtype": "auto", "extra_args": ["--max-num-batched-tokens=4096"]}, 1)
    assert (k.weight_dtype, k.max_num_batched_tokens, notes) == ("bfloat16", 4096, ())


def test_the_fit_reproduces_the_measured_run(llama):
    """In-sample: the fitted constants give the measured GPU's figures back, the anchor (1 user) exactly, output tok/s
    within 12 % at every level. This run's TTFT at 128 users (mean 366 ms, a tail over a 165 ms median) is one no
    constant of the sim reaches (it gives ~60 ms): the residual says so, it is not hidden."""
    sim_t, real_t, sim_f, real_f = llama.fit_check[1]
    assert abs(sim_t / real_t - 1) < 0.02 and abs(sim_f / real_f - 1) < 0.02, table(llama)
    assert all(abs(s / r - 1) < 0.12 for s, r, _, _ in llama.fit_check.values()), table(llama)
    tok, ttft = llama.fit_error()       # what the expected-error line reports: the worst level, not a kinder one
    assert tok == max(abs(s / r - 1) for s, r, _, _ in llama.fit_check.values())
    assert ttft == max(abs(s / r - 1) for _, _, s, r in llama.fit_check.values())
    # every level simulated with the measured level's own request count (whole-level figures depend on it)
    assert [lv.requests for lv in llama.targets["H200-141GB"]] == [lv.requests for lv in llama.source.levels]
    # no warning about a grid edge the fit did not reach: the per-request share it chose is under the grid's top
    assert not any("per-request API cost" in w for w in llama.warnings), llama.warnings
    # projected back onto its own GPU, the same constants give the fit's own figures
    for lv in llama.targets["H200-141GB"]:
        sim_t, _, sim_f, _ = llama.fit_check[lv.concurrency]
        assert lv.output_tok_s == pytest.approx(sim_t, rel=1e-9)
        assert lv.mean_ttft_ms == pytest.approx(sim_f, rel=1e-9)


def test_the_gpu_swap_moves_a_gpu_bound_model(llama):
    """An 8B in bf16 decodes at the speed of its weights' reads: one user on an H100 (3.35 TB/s) gets fewer tokens
    than on the H200 (4.8 TB/s) it was measured on, and never more than the bandwidth ratio allows."""
    h100, h200 = llama.targets["H100-SXM-80GB"][0], llama.targets["H200-141GB"][0]
    assert h100.concurrency == 1
    assert 0.68 < h100.output_tok_s / h200.output_tok_s < 0.80      # 3.35 / 4.8 = 0.70, plus the fixed costs


def test_expected_error_names_the_source_and_the_check(llama):
    lines = expected_lines(llama, "H100-SXM-80GB")
    assert lines[0].startswith(f"PROJECTED (simulated) from run #{LLAMA} on H200-141GB to H100-SXM-80GB")
    assert "in-sample" in lines[0]
    assert lines[1].startswith("projection check: expected error ±")
    # the checks were of Qwen3-0.6B token-id runs: the line says this run is neither, and is not kinder than the fit
    assert "Llama-3.1-8B-Instruct was not among them" in lines[1] and "this run's are text" in lines[1]
    assert f"±{llama.fit_error()[1] * 100:.0f}% mean TTFT" in lines[1]


def test_saved_projections_are_labelled_simulated_runs(llama, stored, tmp_path):
    from bench.report import run_document, runs_table, sim_error_lines
    from storage import queries as q

    made = save_projection(llama, str(stored))
    rid = made["H100-SXM-80GB"]
    d = q.get_run(rid, str(stored))
    assert (d.run.simulated, d.run.engine_kind, d.run.gpu, d.run.status) == (True, "sim", "H100-SXM-80GB", "completed")
    assert d.run.projected_from == LLAMA and f"PROJECTED from #{LLAMA}" in d.run.label
    assert d.config["engine"]["kind"] == "sim" and d.config["engine"]["sim_gpu"] == "H100-SXM-80GB"
    got = {lv.concurrency: lv for lv in d.levels}
    for lv in llama.targets["H100-SXM-80GB"]:
        assert got[lv.concurrency].output_tok_s == pytest.approx(lv.output_tok_s, rel=1e-6)
        assert got[lv.concurrency].summary["ttft_ms"]["mean"] == pytest.approx(lv.mean_ttft_ms, rel=1e-6)
        assert got[lv.concurrency].n_ok == lv.requests
    doc = run_document(rid, str(stored))
    assert sim_error_lines(doc) == expected_lines(llama, "H100-SXM-80GB")
    assert f"PROJECTED from #{LLAMA}" in runs_table(str(stored))
    # a bundle carries the projection to another history
    from storage.bundle import import_bundle, read_bundle_file, write_bundle

    write_bundle([rid], tmp_path / "p.melt.json.gz", str(stored))
    other = str(tmp_path / "other.db")
    import_bundle(read_bundle_file(tmp_path / "p.melt.json.gz"), other)
    moved = q.list_runs(other)[0]
    # the source is not in that history: no stale "#3" pointing at another run there
    assert moved.projection["from_run"] is None and moved.projection["to_gpu"] == "H100-SXM-80GB"
    assert "projected from a run of another history" in moved.label.lower()
    assert moved.projection["expected"][0].startswith("PROJECTED (simulated) from a run of another history on H200")
    # the source's price is the H200's: not carried to an H100 projection
    assert d.config.get("price_per_gpu_hour") is None and d.run.price_per_gpu_hour is None
    # a bundle may not call a measured run a projection
    import gzip as gz

    from storage.bundle import BundleError

    doc = json.loads(gz.decompress((tmp_path / "p.melt.json.gz").read_bytes()))
    doc["runs"][0]["run"]["simulated"] = False
    with pytest.raises(BundleError, match="a projection is a simulated run"):
        import_bundle(gz.compress(json.dumps(doc).encode()), str(tmp_path / "third.db"))


def test_the_cli_prints_and_stores_nothing_with_no_save(stored, capsys):
    from bench.cli import main
    from storage import queries as q

    before = len(q.list_runs(str(stored)))
    assert main(["--db", str(stored), "project", str(SGLANG), "--gpu", "H100-SXM-80GB"]) == 2
    assert "vLLM only" in capsys.readouterr().err
    assert main(["--db", str(stored), "project", str(LLAMA), "--gpu", "B200-180GB", "--no-save", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["from_run"] == LLAMA and out["saved_runs"] == {}
    assert [lv["concurrency"] for lv in out["targets"]["B200-180GB"]] == [1, 16, 128, 512]
    assert "H200 to B200 was not among the checks" in out["expected"]["B200-180GB"][1]
    assert len(q.list_runs(str(stored))) == before


def test_a_projection_is_checked_against_a_measured_run_of_the_same_workload(llama, stored):
    import dataclasses

    from bench.project import check_against, check_table

    assert list(llama.targets) == ["H100-SXM-80GB", "H200-141GB"]
    measured = load_source(LLAMA, str(stored))
    rows = check_against(llama, measured)       # onto its own H200: the in-sample case, known numbers
    assert [r[0] for r in rows] == [1, 16, 128, 512]
    for (c, pt, mt, pf, mf), lv in zip(rows, measured.levels):
        assert (mt, mf) == (lv.output_tok_s, lv.mean_ttft_ms)
        sim_t, _, sim_f, _ = llama.fit_check[c]
        assert pt == pytest.approx(sim_t, rel=0.02) and pf == pytest.approx(sim_f, rel=0.05)
    text = check_table(llama, measured, rows)
    assert "against run #3" in text and "largest error" in text and "| 512 |" in text
    assert "(in-sample: run #3 is the fitted run)" in text and "note:" not in text
    other = dataclasses.replace(measured, uuid="another", run_id=9, levels=tuple(
        dataclasses.replace(lv, requests=lv.requests * 4) if lv.concurrency == 512 else lv for lv in measured.levels))
    text = check_table(llama, other, check_against(llama, other))
    assert "(out of sample: run #9 was not fitted)" in text
    assert "note: c=512: run #9 measured 4,096 requests, run #3 1,024" in text
    # a measured run on a GPU the projection was not made onto, of other settings, or of no common level: refused
    with pytest.raises(ProjectionError, match="was not made onto.*add --gpu B200-180GB"):
        check_against(llama, dataclasses.replace(measured, gpu="B200-180GB"))
    with pytest.raises(ProjectionError, match="not the workload of run #3: output tokens 128 vs 256"):
        check_against(llama, dataclasses.replace(measured, output_len=256))
    with pytest.raises(ProjectionError, match="no level in common"):
        check_against(llama, dataclasses.replace(measured, levels=measured.levels[:0]))
    disjoint = tuple(dataclasses.replace(lv, concurrency=lv.concurrency + 1) for lv in measured.levels)
    with pytest.raises(ProjectionError, match="measured 2, 17, 129, 513 users, run #3 1, 16, 128, 512: no level"):
        check_against(llama, dataclasses.replace(measured, levels=disjoint))


def test_the_cli_refuses_a_check_against_other_engine_settings_before_the_fit(stored, capsys, monkeypatch, tmp_path):
    import bench.project
    from bench.cli import main

    def no_fit(*_a, **_k):
        raise AssertionError("the fit ran before the refusal")

    monkeypatch.setattr(bench.project, "project_source", no_fit)
    # run 4 is the fp8 run of the same model and lengths: its weights differ, so it is no check of run 3's projection
    assert main(["--db", str(stored), "project", str(LLAMA), "--gpu", "H100-SXM-80GB", "--against", "4",
                 "--no-save"]) == 2
    err = capsys.readouterr().err
    assert "run #4 is not the workload of run #3: engine settings" in err and "fp8" in err
    # a history file that is not there is refused, not created; a run that cannot be a check says which run
    missing = tmp_path / "nope.db"
    assert main(["--db", str(stored), "project", str(LLAMA), "--gpu", "H100-SXM-80GB", "--against", "1",
                 "--against-db", str(missing)]) == 2
    assert f"--against-db {missing}: no such file" in capsys.readouterr().err and not missing.exists()
    assert main(["--db", str(stored), "project", str(LLAMA), "--gpu", "H100-SXM-80GB", "--against", str(SGLANG)]) == 2
    assert "--against run #1: run #1 ran 'sglang'" in capsys.readouterr().err


H100_DB = ROOT / "docs/data/h100_8b/melt_llama8b_and_0.6b.db.gz"


def test_the_h200_run_projected_onto_an_h100_against_the_h100_measured(llama, tmp_path):
    """Out of sample: run 3 (Llama-3.1-8B on an H200) projected onto the H100 against the same workload measured
    on an H100 on 2026-12-06 (run 1 of docs/data/h100_8b; another host). Output tok/s within the issue's ±10 % at
    every level, as measured (-4.5 / -3.4 / -0.2 / -6.1 %); the mean TTFT is not (docs/PERFORMANCE.md)."""
    from bench.project import check_against

    p = tmp_path / "h100.db"
    with gzip.open(H100_DB) as src, open(p, "wb") as dst:
        shutil.copyfileobj(src, dst)
    measured = load_source(1, str(p))
    assert (measured.gpu, measured.model) == ("H100-SXM-80GB", "meta-llama/Llama-3.1-8B-Instruct")
    rows = check_against(llama, measured)
    assert [r[0] for r in rows] == [1, 16, 128, 512]
    for c, pt, mt, pf, mf in rows:
        assert abs(pt / mt - 1) < 0.10, (c, pt, mt)
