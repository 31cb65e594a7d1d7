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
