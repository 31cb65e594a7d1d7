"""`python -m engines.guardian WORKER_PID WORKER_START ENGINE_PID ENGINE_START TAG`: ends an engine whose Melt worker
died without stopping it.

The supervisor starts one guardian next to every engine it launches, in a session of its own (a Ctrl-C to the
terminal's process group or a SIGKILL of the worker does not reach it). The guardian waits for one of two things:
  - the engine's leader exits (the normal stop, or a crash): the worker is alive and cleans up, so the guardian only
    stays while processes carrying the launch's MELT_ENGINE_TAG still exist, in case the worker dies before they are
    gone, then exits;
  - the worker dies (SIGKILL, out-of-memory kill, crash): the guardian sends SIGTERM to the engine's process group
    (vLLM frees GPU memory on SIGTERM), waits up to GRACE_S, then SIGKILLs the group and every process that carries
    the tag (children that left the group, e.g. vLLM's EngineCore), and exits.
Processes are identified by pid AND start time (psutil), so a recycled pid is never taken for the worker or the
engine. On Linux a pidfd on the worker makes the wake-up immediate; elsewhere it polls every POLL_S.

Why not PR_SET_PDEATHSIG on the engine: it fires when the *thread* that forked the engine exits, not the process
(a launch from a short-lived thread would kill a healthy engine); it reaches only the direct child, not the
engine's own children (vLLM's EngineCore and GPU workers would survive holding GPU memory); and setting it needs a
preexec_fn, which Python documents as unsafe in a process with threads (the worker runs telemetry and heartbeat
threads). The guardian has none of those limits. If the guardian itself is killed too (the OOM killer, a kill of
every Melt process), the reaper in bench/runs.py is the second line: it ends a dead worker's engines on the next
Melt command.
"""
from __future__ import annotations

import os
import select
import signal
import sys
import time

import psutil

GRACE_S = 10.0
POLL_S = 0.5


def _proc(pid: int, start: float) -> psutil.Process | None:
    """The process `pid` if it is still the one that started at `start` (not a recycled pid), else None."""
    try:
        p = psutil.Process(pid)
        return p if abs(p.create_time() - start) < 0.05 and p.status() != psutil.STATUS_ZOMBIE else None
    except psutil.Error:
        return None


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE  # is_running re-checks the start time
    except psutil.Error:
        return False


def _wait_worker(worker: psutil.Process, fd: int | None, timeout: float) -> bool:
    """Wait up to `timeout` for the worker to end; True if it has."""
    if fd is not None:
        select.select([fd], [], [], timeout)
    else:
        time.sleep(timeout)
    return not _running(worker)


def end_engine(engine: psutil.Process | None, tag: str) -> None:
    """SIGTERM the engine's group, wait GRACE_S, then SIGKILL the group and everything carrying the tag."""
    from engines.supervisor import kill_tagged

    if engine is not None and _running(engine):
        try:
            os.killpg(engine.pid, signal.SIGTERM)  # the leader runs: its pid is the group id (start_new_session)
            os.killpg(engine.pid, signal.SIGCONT)  # a stopped engine acts on SIGTERM only once continued
        except OSError:
            pass
        deadline = time.monotonic() + GRACE_S
        while _running(engine) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _running(engine):
            try:
                os.killpg(engine.pid, signal.SIGKILL)
            except OSError:
                pass
    kill_tagged(tag)


def guard(worker_pid: int, worker_start: float, engine_pid: int, engine_start: float, tag: str) -> str:
    """Watch until the engine is gone or the worker dies; returns what happened (for the log)."""
    worker = _proc(worker_pid, worker_start)
    engine = _proc(engine_pid, engine_start)
    if worker is None:
        end_engine(engine, tag)
        return "worker already gone: engine ended"
    try:
        fd = os.pidfd_open(worker_pid)
    except (AttributeError, OSError):
        fd = None
    while engine is not None and _running(engine):
        if _wait_worker(worker, fd, POLL_S):
            end_engine(engine, tag)
            return "worker died: engine ended"
    # The leader is gone; the worker (alive) stops the rest. Stay while any of it is left, in case the worker dies.
    from engines.supervisor import tagged

    while tagged(tag):
        if _wait_worker(worker, fd, POLL_S * 4):
            end_engine(None, tag)
            return "worker died after the engine's leader: its processes ended"
    return "engine stopped"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 5:
        print("usage: python -m engines.guardian WORKER_PID WORKER_START ENGINE_PID ENGINE_START TAG",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print(f"melt guardian: {guard(int(args[0]), float(args[1]), int(args[2]), float(args[3]), args[4])}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
