"""CLI input validation: bad input gets a clear error before anything starts."""
import os

import pytest

from bench.cli import UsageError, build_config, make_parser, parse_levels, preflight
from bench.config import LengthRange, WorkloadSpec


def cfg(*args: str):
    a = make_parser().parse_args(["sweep", *args])
    return build_config(a)


def test_parse_levels():
    assert parse_levels("10,100, 400") == [10, 100, 400]
    with pytest.raises(UsageError, match="positive"):
        parse_levels("10,0")
    with pytest.raises(UsageError, match="positive"):
        parse_levels("-5")
    with pytest.raises(UsageError, match="whole number"):
        parse_levels("10,abc")
    with pytest.raises(UsageError, match="at least one"):
        parse_levels(" , ")


def test_length_range_parse():
    assert LengthRange.parse("128") == LengthRange(min=128, max=128)
    assert LengthRange.parse("128:1024") == LengthRange(min=128, max=1024)
    for bad in ("1024:128", "0", "a:b", "1:2:3", "-1"):
        with pytest.raises(ValueError):
            LengthRange.parse(bad)


def test_default_stop_rule_is_steady_state():
    wl = WorkloadSpec()
    assert wl.steady_rule and wl.requests_for(10) is None and wl.requests_for(1000) is None
    assert (wl.min_steady_s, wl.min_requests_per_user, wl.max_level_s) == (30.0, 5, 1200.0)
    assert WorkloadSpec(requests=7).requests_for(1000) == 7 and not WorkloadSpec(requests=7).steady_rule
    assert WorkloadSpec(duration_s=5).requests_for(10) is None and not WorkloadSpec(duration_s=5).steady_rule


def test_ramp_up_default_and_explicit():
    wl = WorkloadSpec()
    assert wl.ramp_for(1) == 0.0 and wl.ramp_for(16) == pytest.approx(0.75) and wl.ramp_for(101) == 5.0
    assert wl.ramp_for(10_000) == 5.0
    assert WorkloadSpec(duration_s=4).ramp_for(1000) == 1.0        # auto: at most a quarter of a fixed duration
    assert WorkloadSpec(ramp_up_s=0).ramp_for(1000) == 0.0 and WorkloadSpec(ramp_up_s=9).ramp_for(2) == 9.0


def test_planned_levels_rates_and_repeats():
    c = cfg("--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B", "--levels", "8,64",
            "--rates", "5, 10", "--burstiness", "0.5", "--repeat", "2", "--ramp-up", "0", "--min-steady", "3",
            "--min-requests-per-user", "2", "--level-cap", "60")
    wl = c.workload
    assert wl.rates == [5.0, 10.0] and wl.burstiness == 0.5 and wl.ramp_up_s == 0 and c.repeat == 2
    assert (wl.min_steady_s, wl.min_requests_per_user, wl.max_level_s) == (3.0, 2, 60.0)
    plan = [(p.concurrency, p.request_rate, p.repeat) for p in c.planned_levels()]
    assert plan == [(8, 5.0, 0), (8, 10.0, 0), (64, 5.0, 0), (64, 10.0, 0),
                    (8, 5.0, 1), (8, 10.0, 1), (64, 5.0, 1), (64, 10.0, 1)]  # repeats go round the whole sweep
    one = cfg("--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B", "--levels", "4")
    assert [(p.concurrency, p.request_rate, p.repeat) for p in one.planned_levels()] == [(4, None, 0)]


def test_sim_config_ok():
    c = cfg("--engine", "sim", "--gpu", "h100-sxm-80gb", "--model", "Qwen/Qwen3-0.6B", "--levels", "1,16",
            "--input-len", "128:1024", "--output-len", "128", "--requests", "50")
    assert c.gpu == "H100-SXM-80GB" and c.engine.sim_gpu == "H100-SXM-80GB"
    assert c.levels == [1, 16] and c.workload.input_len.max == 1024 and c.workload.requests == 50
    assert c.engine.simulated and c.price_per_gpu_hour and c.price_per_gpu_hour > 0


@pytest.mark.parametrize("args, match", [
    (["--engine", "sim", "--gpu", "H100-SXM-81GB", "--model", "Qwen/Qwen3-0.6B"], "unknown GPU.*H100-SXM-80GB"),
    (["--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen9"], "unknown model"),
    (["--engine", "sim", "--model", "Qwen/Qwen3-0.6B"], "--gpu is required"),
    (["--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B", "--levels", "10,-1"], "positive"),
    (["--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B", "--input-len", "900:100"], "min > max"),
    (["--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B", "--output-len", "x"], "--output-len"),
    (["--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B", "--requests", "0"], "--requests"),
    (["--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B", "--requests", "5", "--duration", "3"], "not both"),
    (["--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B", "--rates", "5,x"], "--rates"),
    (["--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B", "--rates", "5,0"], "positive"),
    (["--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B", "--rates", "5",
      "--request-rate", "3"], "not both"),
    (["--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B", "--burstiness", "0.5"],
     "--request-rate or --rates"),
    (["--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B", "--ramp-up", "-1"], "--ramp-up"),
    (["--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B", "--repeat", "0"], "--repeat"),
    (["--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B", "--min-steady", "0"],
     "--min-steady"),
    (["--engine", "openai", "--model", "m"], "--base-url is required"),
    (["--engine", "openai", "--model", "m", "--base-url", "localhost:8000"], "not an http"),
    (["--engine", "vllm", "--model", "m", "--base-url", "http://127.0.0.1:1"], "only for --engine openai"),
    (["--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B", "--mem-fraction", "1.5"], "mem_fraction"),
])
def test_bad_input_is_rejected(args, match):
    with pytest.raises(UsageError, match=match):
        cfg(*args)


def test_unwritable_db_path_is_rejected(tmp_path):
    c = cfg("--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # root ignores permission bits: use a path under a regular file instead
            target = tmp_path / "afile"
            target.write_text("x")
            bad = target / "sub" / "melt.db"
        else:
            bad = ro / "melt.db"
        with pytest.raises(UsageError, match="cannot"):
            preflight(c, str(bad))
    finally:
        ro.chmod(0o700)


def test_port_in_use_is_rejected():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        c = cfg("--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B", "--port", str(port))
        with pytest.raises(UsageError, match=str(port)):
            preflight(c, None)
    finally:
        s.close()


def test_prompt_flags(tmp_path):
    c = cfg("--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B")
    assert c.workload.prompt_format == "text" and c.workload.prefix_len == 0      # text is the default
    c = cfg("--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B", "--prompt-format",
            "token-ids", "--prefix-len", "64", "--input-len", "lognormal", "--output-len", "normal:128,16")
    assert c.workload.prompt_format == "token-ids" and c.workload.prefix_len == 64
    assert c.workload.input_len.mean == 69.5 and c.workload.output_len.kind == "normal"
    with pytest.raises(UsageError, match="chat sends text"):
        cfg("--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B", "--endpoint", "chat",
            "--prompt-format", "token-ids")
    with pytest.raises(UsageError, match="--tokenizer"):
        cfg("--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B", "--tokenizer", str(tmp_path))
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"prompt": 3}\n')
    with pytest.raises(UsageError, match="--prompt-file: .*line 1"):
        cfg("--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B", "--prompt-file", str(bad))
    bad.write_text('{"prompt": "hello"}\n')
    with pytest.raises(UsageError, match="sent as text"):
        cfg("--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B", "--prompt-file", str(bad),
            "--prompt-format", "token-ids")


def test_dummy_weights_with_a_local_model_dir(tmp_path):
    """A config.json of one's own is a model: --dummy-weights takes the directory (it used to say 'unknown model')."""
    d = tmp_path / "my-model"
    d.mkdir()
    with pytest.raises(UsageError, match="no config.json"):
        cfg("--engine", "vllm", "--model", str(d), "--dummy-weights")
    (d / "config.json").write_text("{}")
    c = cfg("--engine", "vllm", "--model", str(d), "--dummy-weights")
    assert c.engine.model == str(d) and c.engine.dummy_weights
    with pytest.raises(UsageError, match="unknown model"):
        cfg("--engine", "vllm", "--model", "no/such-model", "--dummy-weights")


def test_timeouts_and_the_level_failure_policy():
    sim = ("--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B")
    c = cfg(*sim)
    assert c.workload.request_timeout_s == 600 and c.workload.stall_timeout_s == 60 and c.on_level_failure == "stop"
    c = cfg(*sim, "--request-timeout", "30", "--stall-timeout", "0", "--on-level-failure", "continue")
    assert c.workload.request_timeout_s == 30 and c.workload.stall_timeout_s is None  # 0 = no stall watchdog
    assert c.on_level_failure == "continue"
    for bad in (("--request-timeout", "0"), ("--stall-timeout", "-1")):
        with pytest.raises(UsageError, match=bad[0]):
            cfg(*sim, *bad)


def test_a_trace_file_sets_the_request_count(tmp_path):
    f = tmp_path / "trace.jsonl"
    f.write_text('{"t": 0, "input_len": 16}\n{"t": 0.5, "input_len": 32}\n{"t": 2, "input_len": 8}\n')
    sim = ("--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B", "--prompt-file", str(f))
    assert cfg(*sim).workload.requests == 3                   # replayed once, not the steady-state rule
    assert cfg(*sim, "--requests", "7").workload.requests == 7
    with pytest.raises(UsageError, match="own arrival times"):
        cfg(*sim, "--request-rate", "5")


def test_real_engine_sweep_records_the_gpu_it_runs_on(monkeypatch):
    """A real-engine sweep without --gpu takes the catalog id of the GPU NVML names (so cost, roofline and the
    engine report know it: the H200 runs of docs/PERFORMANCE.md were stored as GPU '?' before); no NVML, none."""
    from telemetry import nvml

    monkeypatch.setattr(nvml, "list_gpus", lambda: [{"index": 0, "name": "NVIDIA H100 80GB HBM3"},
                                                    {"index": 1, "name": "NVIDIA H200"}])
    assert cfg("--engine", "vllm", "--model", "Qwen/Qwen3-0.6B", "--dummy-weights").gpu == "H100-SXM-80GB"
    assert cfg("--engine", "vllm", "--model", "Qwen/Qwen3-0.6B", "--gpus", "1").gpu == "H200-141GB"
    assert cfg("--engine", "vllm", "--model", "Qwen/Qwen3-0.6B", "--gpu", "H100-PCIe-80GB").gpu == "H100-PCIe-80GB"
    assert cfg("--engine", "openai", "--base-url", "http://127.0.0.1:8000", "--model", "m").gpu is None
    monkeypatch.setattr(nvml, "list_gpus", lambda: [])
    assert cfg("--engine", "vllm", "--model", "Qwen/Qwen3-0.6B").gpu is None


def test_connect_at_go_is_stored_passed_to_the_level_and_labelled():
    from bench.loadgen import LevelPlan
    from bench.report import prompt_label

    base = ("--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B", "--levels", "8")
    on, off = cfg(*base), cfg(*base, "--connect-at-go")
    assert on.workload.preconnect is True and off.workload.preconnect is False
    plan = lambda c: LevelPlan.from_workload(c.workload, base_url="http://x", model="m", concurrency=8,  # noqa: E731
                                             request_rate=None)
    assert plan(on).preconnect is True and plan(off).preconnect is False
    assert prompt_label(on.model_dump()) == "text"
    assert prompt_label(off.model_dump()) == "text · connections at go"
    assert "connections" not in prompt_label({"workload": {}})   # a run stored before the option: pre-connected
