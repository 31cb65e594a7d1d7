"""`melt calibrate-host` (engines/sim/calibrate_host.py): the profile it writes, its errors, and what the sim does
with the profile."""
from __future__ import annotations

import shutil

import pytest

from bench.cli import build_config, main, make_parser
from catalog import get_gpu, get_model
from catalog.tokenizer import fingerprint, tokenizer_file
from engines.sim import calibrate_host as ch
from engines.sim.adapter import build_plan
from engines.sim.host import HOSTS_DIR, HostMicro, load_host_profile
from engines.sim.model import PerfModel
from engines.sim.scheduler import simulate_closed_loop

TINY = "melt/tiny-qwen3"   # 32,000-token BPE: quick to load
FAST = ["--seconds", "0.3", "--prompt-len", "128", "--output-len", "32"]


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["calibrate-host", "--model", TINY, *FAST, *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _micro(tok_us: float, per_tok_us: float, **kw) -> HostMicro:
    return HostMicro(tokenize_per_prompt_token_s=tok_us * 1e-6, detokenize_per_token_s=0.25 * per_tok_us * 1e-6,
                     frame_per_token_s=0.75 * per_tok_us * 1e-6, **kw)


def _sim(host, c=256):
    perf = PerfModel(get_gpu("H200-141GB"), get_model("Qwen/Qwen3-0.6B"))
    return simulate_closed_loop(perf, c, 2 * c, 512, 128, host=host, text_prompt=True)


def test_writes_a_valid_profile_with_provenance_and_compares_it(tmp_path, capsys):
    path = tmp_path / "me.yaml"
    rc, out, _ = _run(capsys, "-o", str(path))
    assert rc == 0
    prof = load_host_profile(path)           # the sim's loader: extra="forbid" pydantic model
    m = prof.micro
    assert prof.derivation == "raw-micro" and prof.reference is None
    assert m.tokenize_per_prompt_token_s > 0 and m.detokenize_per_token_s > 0 and m.frame_per_token_s > 0
    assert prof.per_token_light_s == prof.per_token_heavy_s == pytest.approx(m.per_token_s)
    assert prof.tokenize_per_prompt_token_s == m.tokenize_per_prompt_token_s
    assert m.hostname and m.cpu_model and m.date[:2] == "20" and m.method and m.load_avg
    assert m.tokenizer_sha == fingerprint(tokenizer_file(32000)) and m.vocab_size == 32000
    assert "RAW micro-costs" in out and "floor" in out       # says what the sim does with raw micro-costs
    for bundled in ("typical-datacenter-core", "h200-host-b-2026-12-01", f"{prof.id} (this host)"):
        assert bundled in out
    assert path.read_text().startswith("# Host profile written by `melt calibrate-host` (raw-micro).")


def test_default_output_is_under_the_data_dir_and_a_tokenizer_directory_works(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("MELT_HOME", str(home))
    d = tmp_path / "model"
    d.mkdir()
    shutil.copy(tokenizer_file(32000), d / "tokenizer.json")
    rc, out, _ = _run(capsys, "--tokenizer", str(d), "--id", "my-box")
    assert rc == 0
    assert load_host_profile(home / "hosts" / "my-box.yaml").micro.tokenizer == str(d / "tokenizer.json")


@pytest.mark.parametrize("argv,expect", [
    (["--tokenizer", "/nonexistent/tokenizer.json"], "no such tokenizer.json file"),
    (["--reference", "no-such-host"], "host profile not found"),
    (["-o", "PLACEHOLDER/sub/p.yaml"], "cannot write"),      # a file where a directory should be
    (["-o", "PLACEHOLDER.txt"], "must end in .yaml"),
    (["--tokenizer", "BADJSON"], "not a tokenizer.json"),
])
def test_bad_input_is_one_clear_line_before_any_timing(tmp_path, capsys, argv, expect):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a tokenizer"}')
    argv = [x.replace("PLACEHOLDER", str(afile)).replace("BADJSON", str(bad)) for x in argv]
    rc, out, err = _run(capsys, *argv)
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m bench: error: ") and expect in lines[0], err
    assert "Traceback" not in err


def test_sweep_takes_the_written_profile_and_the_sim_loads_it(tmp_path, capsys):
    path = tmp_path / "me.yaml"
    assert _run(capsys, "-o", str(path))[0] == 0
    a = make_parser().parse_args(["sweep", "--engine", "sim", "--gpu", "H200-141GB", "--model", "Qwen/Qwen3-0.6B",
                                  "--sim-host-profile", str(path)])
    spec = build_config(a).engine
    argv = build_plan(spec, "127.0.0.1", 8000, tmp_path).argv
    assert argv[argv.index("--host-profile") + 1] == str(path.resolve())
    from engines.sim.__main__ import parse_args
    host = load_host_profile(parse_args(["--gpu", "H200-141GB", "--model", "Qwen/Qwen3-0.6B",
                                         "--host-profile", str(path)]).host_profile)
    s = _sim(host, c=16)
    assert s.requests == 32 and s.output_throughput > 0


def test_sim_host_profile_is_checked_at_the_command_line(tmp_path):
    from bench.cli import UsageError

    base = ["sweep", "--engine", "sim", "--gpu", "H200-141GB", "--model", "Qwen/Qwen3-0.6B"]
    with pytest.raises(UsageError, match="host profile not found"):
        build_config(make_parser().parse_args([*base, "--sim-host-profile", str(tmp_path / "none.yaml")]))
    with pytest.raises(UsageError, match="for --engine sim"):
        build_config(make_parser().parse_args(["sweep", "--engine", "vllm", "--model", "x",
                                               "--sim-host-profile", "typical-datacenter-core"]))
    assert build_config(make_parser().parse_args([*base, "--sim-host-profile", "h200-host-b-2026-12-01"])
                        ).engine.sim_host_profile == "h200-host-b-2026-12-01"


def test_measured_slower_frontend_work_gives_a_slower_simulated_frontend(monkeypatch):
    """End to end: the same benchmark with the framing made 4x the work measures slower, and the sim on that
    profile serves fewer tokens with a longer TTFT (c=256, text prompts, H200: frontend-bound only if slow)."""
    path = tokenizer_file(32000)
    ref = load_host_profile()
    fast = ch.measure(path, seconds=0.6, prompt_len=128, output_len=32)
    real = ch._frame
    monkeypatch.setattr(ch, "_frame", lambda *a: [real(*a) for _ in range(4)][0])
    slow = ch.measure(path, seconds=0.6, prompt_len=128, output_len=32)
    assert slow.frame_per_token_s > 1.5 * fast.frame_per_token_s
    # Raw micro-costs are far below the real API server's: scale both by the same factor so the API core matters.
    k = 40.0
    profs = []
    for m in (fast, slow):
        m = m.model_copy(update={"detokenize_per_token_s": k * m.detokenize_per_token_s,
                                 "frame_per_token_s": k * m.frame_per_token_s})
        profs.append(ch.build_profile(m, ref, "x")[0])
    s_fast, s_slow = _sim(profs[0]), _sim(profs[1])
    assert s_slow.output_throughput < 0.9 * s_fast.output_throughput
    assert s_slow.mean_ttft_ms > s_fast.mean_ttft_ms


def test_scaled_profile_is_the_reference_times_the_micro_ratio_and_slower_micro_is_slower():
    ref = load_host_profile("h200-host-b-2026-12-01").model_copy(update={"micro": _micro(3.0, 10.0)})
    same, notes = ch.build_profile(_micro(3.0, 10.0), ref, "same")
    assert same.derivation == "scaled-micro" and same.reference == ref.id and "scaled-micro" in notes[0]
    assert same.per_token_heavy_s == pytest.approx(ref.per_token_heavy_s)
    slow = ch.build_profile(_micro(6.0, 15.0), ref, "slow")[0]
    assert slow.per_token_light_s == pytest.approx(1.5 * ref.per_token_light_s)
    assert slow.per_token_heavy_s == pytest.approx(1.5 * ref.per_token_heavy_s)
    assert slow.tokenize_per_prompt_token_s == pytest.approx(2.0 * ref.tokenize_per_prompt_token_s)
    # the engine loop's fitted costs scale with the per-token ratio; a reference without them leaves them unset
    dref = load_host_profile("h200-host-d-2026-12-03")
    dslow = ch.build_profile(_micro(2 * dref.micro.tokenize_per_prompt_token_s * 1e6,
                                    1.5 * dref.micro.per_token_s * 1e6), dref, "dslow")[0]
    for k in ch.ENGINE_FIELDS:
        assert getattr(dslow, k) == pytest.approx(1.5 * getattr(dref, k), rel=1e-6), k
    assert same.engine_step_s is None and ref.engine_step_s is None
    fast = ch.build_profile(_micro(1.5, 5.0), ref, "fast")[0]
    s = {name: _sim(p) for name, p in (("fast", fast), ("same", same), ("slow", slow))}
    assert s["slow"].output_throughput < s["same"].output_throughput <= s["fast"].output_throughput
    assert s["slow"].mean_ttft_ms > s["same"].mean_ttft_ms >= s["fast"].mean_ttft_ms


def test_attach_makes_a_reference_and_then_profiles_are_scaled(tmp_path, capsys):
    ref = tmp_path / "ref.yaml"
    shutil.copy(HOSTS_DIR / "typical-datacenter-core.yaml", ref)
    rc, out, _ = _run(capsys, "--attach", str(ref))
    assert rc == 0 and "reference" in out
    assert ref.read_text().startswith("# Default host profile")          # comments kept
    assert load_host_profile(ref).micro is not None
    assert _run(capsys, "--attach", str(ref))[0] == 2                     # once only
    path = tmp_path / "me.yaml"
    rc, out, _ = _run(capsys, "--reference", str(ref), "-o", str(path))
    assert rc == 0 and "scaled-micro" in out
    prof = load_host_profile(path)
    assert prof.derivation == "scaled-micro" and prof.reference == "typical-datacenter-core"
    ratio = prof.micro.per_token_s / load_host_profile(ref).micro.per_token_s
    assert prof.per_token_heavy_s == pytest.approx(load_host_profile().per_token_heavy_s * ratio)
