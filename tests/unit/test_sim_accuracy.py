"""engines/sim/accuracy.py: the sim's expected error per concurrency, from the calibration asset. Expected values are
computed here from the rows (synthetic ones written to a temporary asset, or the bundled asset's), never typed in."""
import math

import pytest
import yaml

from catalog import CatalogError
from engines.sim import accuracy as acc

Q06, Q8 = "Qwen/Qwen3-0.6B", "Qwen/Qwen3-8B"
H100, H200 = "H100-SXM-80GB", "H200-141GB"
LEVELS = (1, 16, 128, 512, 1024)


def _rows():
    """compare()-shaped tuples: (gpu, host, prompts, c, sim tok/s, real tok/s, sim TTFT, real TTFT, src, model).
    Errors differ by row and some are negative and larger in size than the positive ones at the same level."""
    out = []
    for i, (gpu, model) in enumerate(((H100, Q06), (H200, Q06), (H200, Q8))):
        for j, c in enumerate(LEVELS):
            for k, prompts in enumerate(("ids", "melt-text")):
                tok_err = (-1) ** (i + k) * (0.0217 + 0.05 * i + 0.01 * j + 0.003 * k)
                ttft_err = (-1) ** (i + j + k) * (0.0413 + 0.07 * i + 0.02 * j + 0.005 * k)
                real_tok, real_ttft = 1000.0 * (j + 1), 20.0 * (j + 1)
                out.append((gpu, f"host-{i}", prompts, c, real_tok * (1 + tok_err), real_tok,
                            real_ttft * (1 + ttft_err), real_ttft, f"data-{i}", model))
    return out


@pytest.fixture
def asset(tmp_path):
    path = tmp_path / "sim_accuracy.yaml"
    acc.write_accuracy(_rows(), path)
    return path


def _expect(rows, c, model=None, gpu=None):
    """Max |error| at measured concurrency c over rows of model/gpu, by hand from the stored rows."""
    sel = [r for r in rows if r.concurrency == c and (model is None or r.model == model)
           and (gpu is None or r.gpu == gpu)]
    return (max(abs(r.sim_output_tok_s / r.real_output_tok_s - 1) for r in sel),
            max(abs(r.sim_mean_ttft_ms / r.real_mean_ttft_ms - 1) for r in sel), len(sel))


def test_yaml_round_trip_keeps_every_row_and_its_errors(asset):
    doc = acc.load_accuracy(asset)
    assert doc.generated_by == acc.WRITE_CMD and doc.date and doc.data and doc.input_len > 0
    assert sorted(doc.rows, key=repr) == sorted(acc.rows_from_compare(_rows()), key=repr)
    src = {(r[0], r[1], r[2], r[3]): r for r in _rows()}
    for row in doc.rows:
        t = src[(row.gpu, row.host_profile, row.prompts, row.concurrency)]
        assert row.model == t[9] and row.measured_on == t[8]
        assert row.output_tok_s_error == pytest.approx(t[4] / t[5] - 1, abs=2e-4)
        assert row.mean_ttft_error == pytest.approx(t[6] / t[7] - 1, abs=2e-4)
    # rewriting what was loaded gives the same file content (the date aside)
    again = asset.with_name("again.yaml")
    acc.write_accuracy(doc.rows, again, input_len=doc.input_len, output_len=doc.output_len, date=doc.date)
    assert yaml.safe_load(again.read_text()) == yaml.safe_load(asset.read_text())


@pytest.mark.parametrize("asked", [1, 2, 4, 10, 16, 40, 100, 128, 300, 400, 512, 700, 1000, 1024, 2048])
def test_band_is_the_max_abs_error_at_the_log_nearest_measured_level(asset, asked):
    rows = acc.load_accuracy(asset).rows
    near = min(LEVELS, key=lambda c: (abs(math.log(asked / c)), -c))
    b = acc.expected_error(asked, path=asset)
    tok, ttft, n = _expect(rows, near)
    assert (b.asked, b.concurrency, b.n_runs) == (asked, near, n)
    assert b.output_tok_s_error == pytest.approx(tok, abs=2e-4) and b.mean_ttft_error == pytest.approx(ttft, abs=2e-4)
    # the max is over sizes: the signed max differs from it for these rows
    signed = max(r.output_tok_s_error for r in rows if r.concurrency == near)
    assert b.output_tok_s_error >= signed and not b.beyond_range
    assert b.measured == (min(LEVELS), max(LEVELS))


def test_named_cases_and_the_measured_range(asset):
    assert [acc.expected_error(c, path=asset).concurrency for c in (10, 100, 400, 10000)] == [16, 128, 512, 1024]
    assert acc.expected_error(4, path=asset).concurrency == 16          # a tie on the log scale: the larger
    edge = max(LEVELS) * acc.RANGE_FACTOR
    assert not acc.expected_error(edge, path=asset).beyond_range
    far = acc.expected_error(edge + 1, path=asset)
    assert far.beyond_range and far.concurrency == max(LEVELS)
    assert "beyond the measured range" in acc.describe(far) and "expected error unknown" in acc.describe(far)
    assert acc.expected_error(0, path=asset) is None


def test_model_and_gpu_filters_and_their_fallback(asset):
    rows = acc.load_accuracy(asset).rows
    b = acc.expected_error(128, model=Q8, path=asset)
    tok, ttft, n = _expect(rows, 128, model=Q8)
    assert b.model_matched and b.models == (Q8,) and b.n_runs == n
    assert b.output_tok_s_error == pytest.approx(tok, abs=2e-4) and b.mean_ttft_error == pytest.approx(ttft, abs=2e-4)
    b = acc.expected_error(128, model=Q06, gpu=H100, path=asset)
    assert (b.models, b.gpus, b.n_runs) == ((Q06,), (H100,), _expect(rows, 128, Q06, H100)[2])
    # no run of that model: every row; said in the band and its words
    b = acc.expected_error(128, model="meta-llama/Llama-3.1-8B-Instruct", path=asset)
    assert not b.model_matched and b.n_runs == _expect(rows, 128)[2] and set(b.models) == {Q06, Q8}
    assert "none of Llama-3.1-8B-Instruct measured" in acc.describe(b)
    # a model measured on one GPU only, asked on another: that model's rows on every GPU
    b = acc.expected_error(128, model=Q8, gpu=H100, path=asset)
    assert b.model_matched and not b.gpu_matched and b.models == (Q8,) and b.gpus == (H200,)
    assert "none on H100-SXM measured" in acc.describe(b)


def test_describe_says_the_figures_and_where_they_come_from(asset):
    b = acc.expected_error(100, model=Q06, path=asset)
    text = acc.describe(b)
    assert text.startswith("SIMULATED: expected error ")
    assert f"{acc.pct(b.output_tok_s_error)} output tok/s" in text and f"{acc.pct(b.mean_ttft_error)} mean TTFT" in text
    assert "at 100 users, nearest measured 128" in text and f"{b.n_runs} measured runs" in text
    assert "Qwen3-0.6B on H100-SXM / H200" in text and acc.DOC in text
    assert "at 128 users (" in acc.describe(acc.expected_error(128, path=asset))
    assert acc.pct(0.1234) == "±12%" and acc.pct(0.034) == "±3.4%"


def test_run_notes_group_levels_by_their_measured_level(asset):
    lines = acc.run_notes([4, 1, 16, 64, 100, 16, 5000], Q06, H200, path=asset)
    assert len(lines) == 4                                  # {1}, {4, 16}, {64, 100}, {5000: beyond}
    assert "at 1 user (" in lines[0] and "at C=4, 16, nearest measured 16" in lines[1]
    assert "at C=64, 100, nearest measured 128" in lines[2] and "5,000 users is beyond" in lines[3]
    for line, c in zip(lines, (1, 16, 128, 1024)):
        assert acc.pct(acc.expected_error(c, Q06, H200, path=asset).output_tok_s_error) in line
    assert acc.run_notes([], Q06, path=asset) == [] and acc.run_notes([None, 0], path=asset) == []


def test_a_missing_or_bad_file_is_a_clear_error_naming_it(tmp_path, asset):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(CatalogError, match=r"missing: .*nope\.yaml.*--write"):
        acc.load_accuracy(missing)
    assert acc.run_notes([16], path=missing)[0].startswith("SIMULATED: expected error unknown: ")
    raw = yaml.safe_load(asset.read_text())
    cases = {
        "extra.yaml": {**raw, "surprise": 1},
        "row.yaml": {**raw, "rows": [{**raw["rows"][0], "typo_field": 2}] + raw["rows"][1:]},
        "stale.yaml": {**raw, "rows": [{**raw["rows"][0], "output_tok_s_error": raw["rows"][0]["output_tok_s_error"]
                                        + 0.05}] + raw["rows"][1:]},
        "empty.yaml": {**raw, "rows": []},
        "list.yaml": [1, 2],
    }
    for name, body in cases.items():
        p = tmp_path / name
        p.write_text(yaml.safe_dump(body))
        with pytest.raises(CatalogError, match=rf"{name}: invalid sim accuracy file"):
            acc.load_accuracy(p)
    p = tmp_path / "broken.yaml"
    p.write_text("rows: [unclosed\n")
    with pytest.raises(CatalogError, match=r"broken\.yaml: not valid YAML"):
        acc.load_accuracy(p)


def test_a_rewritten_file_is_read_again(asset):
    before = acc.expected_error(16, path=asset).output_tok_s_error
    rows = [r[:4] + (r[4] * 3,) + r[5:] for r in _rows()]      # the sim 3x too fast everywhere
    acc.write_accuracy(rows, asset)
    assert acc.expected_error(16, path=asset).output_tok_s_error > before + 1


def test_the_bundled_asset_loads_and_its_bands_are_its_rows():
    doc = acc.load_accuracy()
    assert doc.rows and {r.prompts for r in doc.rows} <= {"ids", "melt-text", "vllm-text"}
    for c in sorted({r.concurrency for r in doc.rows}):
        b = acc.expected_error(c)
        tok, ttft, n = _expect(doc.rows, c)
        assert (b.concurrency, b.n_runs) == (c, n)
        assert b.output_tok_s_error == pytest.approx(tok, abs=2e-4)
        assert b.mean_ttft_error == pytest.approx(ttft, abs=2e-4)


def test_cli_prints_the_bands_as_markdown(asset, capsys):
    assert acc.main(["--file", str(asset)]) == 0
    out = capsys.readouterr().out
    rows = acc.load_accuracy(asset).rows
    for c in LEVELS:
        tok, ttft, n = _expect(rows, c)
        assert f"| {c:,} | {acc.pct(tok)} | {acc.pct(ttft)} | {n} |" in out
    assert acc.main(["--file", str(asset.with_name("gone.yaml"))]) == 2
    assert "gone.yaml" in capsys.readouterr().err


def test_a_run_of_another_shape_is_told_so(asset):
    same = acc.run_notes([16], shape=(512, 512, 128, 128), path=asset)
    other = acc.run_notes([16], shape=(256, 256, 64, 1024), path=asset)
    assert "shape not measured" not in same[0]
    assert "this run is 256 in / 64–1,024 out, a shape not measured" in other[0]
    assert acc.shape_of({"workload": {"input_len": {"min": 8, "max": 16}, "output_len": {"min": 4, "max": 4}}}) == \
        (8, 16, 4, 4)
    assert acc.shape_of({}) is None


def test_the_bundled_asset_is_the_current_compare():
    """The stored bands are what fit_host.compare() gives with the bundled constants (regenerate with
    `python -m engines.sim.accuracy --write` after a refit)."""
    from engines.sim import fit_host

    stored = {(r.gpu, r.host_profile, r.prompts, r.concurrency, r.model): r for r in acc.load_accuracy().rows}
    now = fit_host.compare()
    assert len(now) == len(stored)
    for gpu, host, kind, c, st, rt, sf, rf, _src, model in now:
        r = stored[(gpu, host, kind, c, model)]
        assert (r.sim_output_tok_s, r.real_output_tok_s) == (pytest.approx(st, rel=1e-4), pytest.approx(rt, rel=1e-4))
        assert (r.sim_mean_ttft_ms, r.real_mean_ttft_ms) == (pytest.approx(sf, rel=1e-4), pytest.approx(rf, rel=1e-4))


def test_the_bundled_projection_check_is_the_current_projection():
    """The projection rows (bench/project.py's expected error) are fit_host.projection() with the bundled profiles."""
    from engines.sim import fit_host

    stored = {(r.fitted_on, r.from_gpu, r.to_gpu, r.concurrency): r for r in acc.load_accuracy().projections}
    now = fit_host.projection()
    assert len(now) == len(stored) > 0
    for host, src, dst, c, pt, mt, pf, mf in now:
        r = stored[(host, src, dst, c)]
        assert (r.projected_output_tok_s, r.real_output_tok_s) == (pytest.approx(pt, rel=1e-4), pytest.approx(mt, rel=1e-4))
        assert (r.projected_mean_ttft_ms, r.real_mean_ttft_ms) == (pytest.approx(pf, rel=1e-4), pytest.approx(mf, rel=1e-4))


def test_projection_band_names_the_checks_and_what_was_not_checked(tmp_path):
    line = acc.projection_band("H100-SXM-80GB", "H200-141GB", [1, 16])
    assert line.startswith("projection check: expected error ±") and "H100-SXM to H200" in line
    assert "not among the checks" not in line
    other = acc.projection_band("H200-141GB", "B200-180GB", [1, 16, 100000])
    assert "H200 to B200 was not among the checks" in other and "beyond the checked" in other
    # the worst level of the asked ones, nearest measured
    rows = acc.load_accuracy().projections
    at16 = max(abs(r.output_tok_s_error) for r in rows if r.concurrency == 16)
    assert acc.pct(at16) in acc.projection_band("H100-SXM-80GB", "H200-141GB", [16])
    missing = tmp_path / "none.yaml"
    assert "expected error unknown" in acc.projection_band("a", "b", [1], path=missing)
