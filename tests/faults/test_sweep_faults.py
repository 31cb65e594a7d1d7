"""A hung engine under a whole CLI sweep: the stall watchdog fails the level with its cause, the run continues or
stops as asked, every request is stored, and the CLI says what happened."""
from __future__ import annotations

import json

import pytest

from tests.faults.conftest import MODEL
from tests.faults.proxy import FaultProxy, Faults
from tests.integration.test_sweep_cli import melt

pytestmark = pytest.mark.usefixtures("nothing_left")


def _sweep(proxy: FaultProxy, db, *extra: str):
    return melt("sweep", "--engine", "openai", "--base-url", proxy.base_url, "--model", MODEL, "--levels", "4,4",
                "--requests", "400", "--input-len", "16", "--output-len", "8", "--stall-timeout", "2",
                "--telemetry-hz", "0", "--json", *extra, db=db, timeout=120)


@pytest.mark.parametrize("policy", ["continue", "stop"])
def test_a_stalled_level_fails_with_its_cause_and_the_run_follows_the_policy(sim, db_path, policy):
    with FaultProxy(int(sim[1].rsplit(":", 1)[1]), Faults(every=4, stall_after=400)) as proxy:
        r = _sweep(proxy, db_path, "--on-level-failure", policy)
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    levels = doc["levels"]
    assert [lv["status"] for lv in levels] == (["failed", "failed"] if policy == "continue" else ["failed"])
    for lv in levels:
        assert "engine stalled during level" in lv["error"] and "no byte from the server for 2s" in lv["error"]
        assert lv["n_sent"] == lv["n_ok"] + lv["n_err"] and lv["n_err"] >= 4 and lv["n_sent"] < 400
    if policy == "continue":
        assert doc["status"] == "completed" and doc["error"].startswith("2 of 2 level(s) failed")
    else:
        assert doc["status"] == "failed" and "1 remaining level(s) skipped" in doc["error"]
    assert "error: engine stalled during level 1" in r.stderr  # the cause, in plain words, as it happens
    assert "Traceback" not in r.stderr
    # the stored requests agree with the level rows: counted, never dropped
    from storage.queries import error_breakdown

    errs = error_breakdown(doc["run_id"], db_path)
    assert sum(e["count"] for e in errs) == sum(lv["n_err"] for lv in levels)
    assert {e["error"].split(":")[0] for e in errs} <= {"stalled", "cancelled"}


def test_an_engine_that_freezes_mid_level_is_caught_by_the_stall_watchdog_and_stopped(db_path):
    """A hung engine for real: the sim engine Melt launched gets SIGSTOP while the second level streams. Its sockets
    stay open and silent; the watchdog fails the level as stalled, the run stops (the default policy), and the frozen
    engine is still ended cleanly by SIGTERM (the supervisor continues it: a stopped process cannot act on one)."""
    import os
    import signal
    import subprocess
    import sys

    from storage.db import open_db
    from tests.integration.test_sweep_cli import ROOT, SIM, _alive, _end_sweep, _wait_until_level2_is_in_flight

    open_db(db_path)
    p = subprocess.Popen([sys.executable, "-m", "bench", "--db", str(db_path), "sweep", *SIM, "--levels", "2,2",
                          "--requests", "4", "--output-len", "4000", "--input-len", "16", "--stall-timeout", "2",
                          "--json"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        engine_pid = _wait_until_level2_is_in_flight(p, db_path)
        os.kill(engine_pid, signal.SIGSTOP)
        out, err = p.communicate(timeout=120)
    finally:
        _end_sweep(p, db_path)
    assert p.returncode == 1, err
    doc = json.loads(out)
    assert doc["status"] == "failed" and "engine stalled during level 2" in doc["error"]
    first, second = doc["levels"]
    assert first["status"] == "completed" and second["status"] == "failed"
    assert second["n_sent"] == second["n_ok"] + second["n_err"] and second["n_err"] >= 2  # the frozen streams
    assert not _alive(engine_pid)
    assert doc["engine_instances"][0]["exit_code"] == 0  # it handled SIGTERM: no SIGKILL was needed


def test_a_level_the_client_cannot_run_fails_alone_when_asked_to_continue(db_path):
    """--on-level-failure continue: a level the load generator cannot run (more users than the open-file limit
    allows) is stored failed with its cause, and the sweep goes on with the next level."""
    import shutil
    import subprocess
    import sys

    from tests.integration.test_sweep_cli import ROOT, SIM

    if not shutil.which("prlimit"):
        pytest.skip("needs util-linux prlimit")
    r = subprocess.run(["prlimit", "--nofile=256", sys.executable, "-m", "bench", "--db", str(db_path), "sweep", *SIM,
                        "--levels", "2,1000,2",
                        "--requests", "4", "--output-len", "4", "--input-len", "16", "--on-level-failure", "continue",
                        "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert [lv["status"] for lv in doc["levels"]] == ["completed", "failed", "completed"]
    failed = doc["levels"][1]["error"]
    assert "load generator failed at level 2" in failed and "RLIMIT_NOFILE" in failed
    assert doc["status"] == "completed" and doc["error"].startswith("1 of 3 level(s) failed")
