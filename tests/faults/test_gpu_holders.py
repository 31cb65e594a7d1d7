"""Melt engines that outlived their runs, found before a launch on a GPU (issue #10, "an orphan holds the GPU").

NVML's answer (which pids hold GPU memory) is the only part given here: this machine has no GPU. The processes,
their launch tags, the history's runs and the ending are all real."""
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta

import psutil

from bench.config import RunConfig
from bench.gpu_holders import end_orphans, holders, launch_warning
from bench.runs import create_run
from engines.spec import EngineSpec
from engines.supervisor import TAG_ENV
from storage.models import RunStatus, utcnow
from storage.recorder import Recorder


def _sleeper(tag: str | None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != TAG_ENV} | ({TAG_ENV: tag} if tag else {})
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True, env=env)


def _run_with_engine(db_path, tag: str, proc: subprocess.Popen, worker_alive: bool) -> int:
    cfg = RunConfig(engine=EngineSpec(kind="vllm", model="Qwen/Qwen3-0.6B"), gpu="H200-141GB", levels=[1])
    run_id = create_run(cfg, db_path)
    rec = Recorder(run_id, db_path)
    rec.update_run(status=RunStatus.running, host={"hostname": socket.gethostname()},
                   worker_pid=os.getpid() if worker_alive else None,
                   heartbeat_at=utcnow() if worker_alive else utcnow() - timedelta(minutes=5))
    rec.add_instance(kind="vllm", model="m", pid=proc.pid, proc_tag=tag, launched_at=utcnow(), state="ready")
    return run_id


def _gone(p: subprocess.Popen, timeout: float = 10) -> bool:
    try:
        p.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


def test_orphans_are_named_and_only_they_are_ended(db_path):
    orphan = _sleeper("launch-nobody-owns")           # e.g. a `serve` left running, or another history's run
    in_use = _sleeper("launch-of-a-live-run")         # a live run's engine: co-location on purpose
    dead_runs = _sleeper("launch-of-a-dead-run")      # its run's worker died: reaping ends it before we look
    stranger = _sleeper(None)                         # not started by Melt: never ours to end
    procs = (orphan, in_use, dead_runs, stranger)
    try:
        live_run = _run_with_engine(db_path, "launch-of-a-live-run", in_use, worker_alive=True)
        dead_run = _run_with_engine(db_path, "launch-of-a-dead-run", dead_runs, worker_alive=False)
        found, why = holders(db_path, found=[(orphan.pid, 60 << 30), (in_use.pid, 40 << 30),
                                             (dead_runs.pid, 30 << 30), (stranger.pid, None)])
        assert why is None
        assert _gone(dead_runs), "the dead run's engine was not ended by the reaping before the check"
        by_pid = {h.pid: h for h in found}
        assert dead_runs.pid not in by_pid
        assert by_pid[orphan.pid].orphan and by_pid[orphan.pid].run_id is None
        assert by_pid[orphan.pid].used_mib == 60 * 1024
        assert not by_pid[in_use.pid].orphan and by_pid[in_use.pid].run_id == live_run
        assert by_pid[stranger.pid].tag is None and not by_pid[stranger.pid].orphan
        assert "not a Melt process" in by_pid[stranger.pid].describe()
        assert f"live run #{live_run}" in by_pid[in_use.pid].describe()

        msg = launch_warning(found)
        assert msg is not None and f"pid {orphan.pid}" in msg and "61,440 MiB" in msg
        assert f"pid {in_use.pid}" not in msg and f"pid {stranger.pid}" not in msg
        assert "./melt engines orphans --end" in msg

        assert end_orphans(found) == [orphan.pid]
        assert _gone(orphan)
        time.sleep(0.2)
        assert in_use.poll() is None and stranger.poll() is None
        assert launch_warning(holders(db_path, found=[(in_use.pid, 1 << 30)])[0]) is None
        assert dead_run != live_run
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_a_holder_gone_since_nvml_answered_is_skipped(db_path):
    p = _sleeper("short-lived")
    p.kill()
    p.wait()
    found, _ = holders(db_path, found=[(p.pid, 1 << 30)])
    if not psutil.pid_exists(p.pid):  # (not recycled in the meantime)
        assert found == []


def test_cli_says_why_it_cannot_list_holders_without_nvml(db_path, capsys):
    from bench.cli import main

    from telemetry.nvml import nvml_status

    assert main(["engines", "orphans", "--end", "--db", str(db_path)]) == 0
    out = capsys.readouterr().out
    if not nvml_status()[0]:
        assert "NVML unavailable" in out and "no orphaned Melt engine to end" in out
