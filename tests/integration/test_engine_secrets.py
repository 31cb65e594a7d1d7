"""A secret passed to a launched engine as an extra argument (`--engine-arg=--hf-token=...`) reaches the engine but
never the database: not the stored argv, not the stored run config, on the CLI path and the dashboard (worker)
path alike. A stored run started again says the secret must be given again instead of launching with a placeholder.

The engine is the real sim behind a small wrapper (the run's --engine-cmd) that records the argv it was given and
then execs the sim without the two secret flags (which the sim, unlike vLLM, does not take)."""
from __future__ import annotations

import json
import sys
import time

from bench.cli import build_config, make_parser
from bench.runs import start_run
from storage.db import get_engine, open_db
from storage.models import Run
from tests.integration.test_sweep_cli import SIM, melt

WRAPPER = """import json, os, sys
args = sys.argv[1:]
with open({out!r}, "a") as f:
    f.write(json.dumps(args) + "\\n")
keep, skip = [], False
for a in args:
    if skip:
        skip = False
    elif a.startswith("--hf-token="):
        pass
    elif a == "--api-key":
        skip = True
    else:
        keep.append(a)
os.execv(sys.executable, [sys.executable, "-m", "engines.sim", *keep])
"""
SECRETS = ("hf_SECRET_one", "sk-SECRET-two")


def _args(wrapper) -> list[str]:
    return ["sweep", *SIM, "--levels", "2", "--requests", "4", "--output-len", "3", "--input-len", "4",
            "--engine-cmd", f"{sys.executable} {wrapper}", f"--engine-arg=--hf-token={SECRETS[0]}",
            "--engine-arg=--api-key", f"--engine-arg={SECRETS[1]}"]


def _wait_finished(db, run_id, timeout=90) -> Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open_db(db)() as s:
            run = s.get(Run, run_id)
            if run.status.finished:
                return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish")


def test_engine_arg_secrets_reach_the_engine_and_are_never_stored(db_path, tmp_path):
    seen = tmp_path / "argv.jsonl"
    wrapper = tmp_path / "engine_wrapper.py"
    wrapper.write_text(WRAPPER.format(out=str(seen)))
    r = melt(*_args(wrapper), "--json", db=db_path)  # the CLI path
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["config"]["engine"]["extra_args"] == ["--hf-token=<redacted>", "--api-key", "<redacted>"]
    cfg = build_config(make_parser().parse_args(_args(wrapper)))
    run = _wait_finished(db_path, start_run(cfg, db_path))  # the dashboard path: a background worker
    assert run.status.value == "completed", run.error
    launches = [json.loads(line) for line in seen.read_text().splitlines()]
    assert len(launches) == 2
    for argv in launches:  # the engine got the real values both times
        assert f"--hf-token={SECRETS[0]}" in argv and argv[argv.index("--api-key") + 1] == SECRETS[1]
    # "Run again" from the stored config: the secret is not there, so the run says so rather than launch with it
    from bench.config import RunConfig

    again = _wait_finished(db_path, start_run(RunConfig.model_validate(run.config), db_path))
    assert again.status.value == "failed" and "held a secret that is not stored with the run" in again.error
    assert len(seen.read_text().splitlines()) == 2  # nothing was launched
    # Last, with this process's connections closed: opening and closing the files would drop SQLite's POSIX locks
    get_engine(db_path).dispose()
    for f in db_path.parent.glob(db_path.name + "*"):  # the database and its WAL
        data = f.read_bytes()
        assert not any(s.encode() in data for s in SECRETS), f
