"""Fixtures of the fault suite: a real sim engine on loopback (one per module), and a check that a test left no
process of its own running (load-generator shards, CLI sweeps, engines)."""
from __future__ import annotations

import time

import psutil
import pytest

from tests.integration.test_sim_server import start_sim, stop

MODEL = "Qwen/Qwen3-0.6B"
SIM_ARGS = ("--gpu", "H100-SXM-80GB", "--model", MODEL)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    proc, url, out = start_sim(tmp_path_factory.mktemp("sim"), *SIM_ARGS)
    assert url, f"sim did not start: {out}"
    yield proc, url
    stop(proc)


def _running(p: psutil.Process) -> bool:
    """Alive and ours to worry about: multiprocessing's resource tracker lives as long as this process, by design."""
    try:
        return p.status() != psutil.STATUS_ZOMBIE and "multiprocessing.resource_tracker" not in " ".join(p.cmdline())
    except psutil.Error:
        return False


def leftovers(keep: set[int], wait_s: float = 10.0) -> list[psutil.Process]:
    """Descendants of this test process other than `keep`, after giving exiting ones up to wait_s to go."""
    deadline = time.monotonic() + wait_s
    while True:
        left = [p for p in psutil.Process().children(recursive=True) if p.pid not in keep and _running(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@pytest.fixture
def nothing_left(sim):
    """After the test: nothing of ours runs except the shared sim engine."""
    yield
    left = leftovers({sim[0].pid})
    assert not left, f"left running: {[(p.pid, p.cmdline()) for p in left]}"
