"""bench.runs.worker_gone: certain only on this host, by pid AND start time against the worker's last heartbeat."""
import socket
import subprocess
import sys
from datetime import timedelta

from bench.runs import worker_gone
from storage.models import Run, utcnow


def _run(pid, heartbeat_at, host=None) -> Run:
    return Run(worker_pid=pid, heartbeat_at=heartbeat_at, host={"hostname": host or socket.gethostname()})


def test_a_dead_or_recycled_pid_is_certain_anything_else_is_not():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # the process started before the last heartbeat: it may be the worker, alive
        assert not worker_gone(_run(p.pid, utcnow() + timedelta(seconds=10)))
        # it started after the worker's last sign of life: a recycled pid, the worker is gone
        assert worker_gone(_run(p.pid, utcnow() - timedelta(minutes=5)))
        # another host's pid says nothing about this one
        assert not worker_gone(_run(p.pid, utcnow() - timedelta(minutes=5), host="elsewhere"))
    finally:
        p.kill()
        p.wait()
    assert worker_gone(_run(p.pid, utcnow()))  # no such process any more
    assert not worker_gone(_run(None, utcnow()))  # never had a worker (queued): uncertain
