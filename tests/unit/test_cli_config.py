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


def test_default_request_count():
    wl = WorkloadSpec()
    assert wl.requests_for(10) == 100        # at least 100
    assert wl.requests_for(1000) == 2000     # 2 x concurrency
    assert WorkloadSpec(requests=7).requests_for(1000) == 7
    assert WorkloadSpec(duration_s=5).requests_for(10) is None


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
