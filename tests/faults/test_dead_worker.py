"""A CLI sweep killed with SIGKILL: its engine must not outlive it, and the next Melt command reaps the run at once
(no 30 s heartbeat window: the worker's pid is certainly gone)."""
from __future__ import annotations

import time

import pytest

from tests.integration.test_sweep_cli import (_alive, _end_sweep, _sweep_with_a_long_second_level,
                                              _wait_until_level2_is_in_flight, melt)

pytestmark = pytest.mark.usefixtures("nothing_left")


def test_a_sigkilled_sweep_leaves_no_engine_and_is_reaped_at_once(db_path):
    p = _sweep_with_a_long_second_level(db_path)
    try:
        engine_pid = _wait_until_level2_is_in_flight(p, db_path)
        p.kill()
        p.wait(30)
        # no Melt command runs: the launch's guardian ends the engine by itself
        deadline = time.monotonic() + 30
        while _alive(engine_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(engine_pid), "engine still running after its sweep was SIGKILLed"
        r = melt("runs", db=db_path)  # well inside the heartbeat window
        assert r.returncode == 0 and "marked aborted" in r.stderr
        assert r.stdout.splitlines()[-1].split()[-1] == "aborted"
        shown = melt("show", "1", db=db_path).stdout
        assert f"worker process {p.pid} ended without finishing" in shown
    finally:
        _end_sweep(p, db_path)
