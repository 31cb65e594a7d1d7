"""Cancelling a run signals its worker only when the recorded pid is still that worker."""
import socket
import subprocess
import sys
import time
from datetime import timedelta

import pytest

from bench.config import RunConfig
from bench.runs import cancel_run, create_run
from engines.spec import EngineSpec
from storage.db import open_db
from storage.models import Run, RunStatus, utcnow
from storage.recorder import Recorder


def _run(db_path, **fields) -> int:
    run_id = create_run(RunConfig(engine=EngineSpec(kind="sim", model="Qwen/Qwen3-0.6B", sim_gpu="H100-SXM-80GB"),
                                  levels=[1]), db_path)
    Recorder(run_id, db_path).update_run(status=RunStatus.running, **fields)
    return run_id


def test_a_recycled_worker_pid_is_not_signalled(db_path):
    # the worker's last sign of life was a minute ago; the process now at its pid started after that
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        run_id = _run(db_path, worker_pid=p.pid, host={"hostname": socket.gethostname()},
                      heartbeat_at=utcnow() - timedelta(minutes=1))
        assert cancel_run(run_id, db_path) is True
        time.sleep(0.3)
        assert p.poll() is None, "an unrelated process at a recycled pid was signalled"
        with open_db(db_path)() as s:
            assert s.get(Run, run_id).status is RunStatus.cancelled
    finally:
        p.kill()
        p.wait()


def test_the_live_worker_gets_sigterm(db_path):
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        run_id = _run(db_path, worker_pid=p.pid, host={"hostname": socket.gethostname()}, heartbeat_at=utcnow())
        assert cancel_run(run_id, db_path) is True
        assert p.wait(10) == -15
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_a_worker_on_another_host_is_not_signalled_here(db_path):
    run_id = _run(db_path, worker_pid=1, host={"hostname": "some-other-host"}, heartbeat_at=utcnow())
    with pytest.raises(LookupError, match="another host"):
        cancel_run(run_id, db_path)
