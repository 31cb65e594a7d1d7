"""`melt agent --db URL [--name NAME]`: a remote worker host. On a GPU server, it takes the runs a dashboard (or
`melt sweep --agent NAME`) queued for NAME in the shared history (storage.agents.claim_next: row lock, SKIP LOCKED,
never taken twice) and runs each with the ordinary background worker (bench.worker, so bench.sweep), one at a
time: the GPUs of a host are one resource.

The agent heartbeats its row in `agents` every HEARTBEAT_S; its workers heartbeat their runs. Any host's reaper
(bench.runs.reap_stale) aborts the runs of an agent that went silent. Locally, each worker is started with
PDEATHSIG, so if the agent is killed its worker stops load and the engine and ends the run `aborted` (bench.worker);
nothing keeps running unseen. A Cancel from another host sets runs.cancel_requested, which the agent turns into the
worker's SIGTERM. SIGTERM/SIGINT to the agent: stop taking runs, cancel the one in progress, wait, exit.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil
from sqlalchemy.exc import DBAPIError

from bench import __version__
from bench.runs import launch_worker, reap_stale
from bench.sweep import host_info
from storage.agents import agent_alive, agent_heartbeat, agent_stopped, cancels_for, claim_next, register_agent
from storage.db import StorageError, check_writable, open_db, storage_fault
from storage.models import Agent as AgentRow

HEARTBEAT_S = 2.0
POLL_S = 1.0
STOP_WAIT_S = 120.0  # how long a stopping agent waits for its worker to stop its engine


class AgentNameTaken(StorageError):
    """Another live agent has this name."""


@dataclass
class Agent:
    db: str | Path
    name: str = field(default_factory=socket.gethostname)
    max_runs: int = 1
    poll_s: float = POLL_S
    log: Callable[[str], None] = lambda msg: None
    workers: dict[int, subprocess.Popen] = field(default_factory=dict)  # run id -> its worker

    def __post_init__(self) -> None:
        self.db = check_writable(self.db)
        self.factory = open_db(self.db)
        self.pid = os.getpid()
        self.host = host_info() | {"agent": self.name, "agent_pid": self.pid}

    def run(self, stop: threading.Event) -> int:
        self._check_name_free()
        register_agent(self.factory, self.name, socket.gethostname(), self.pid, __version__)
        hb = threading.Thread(target=self._beat, args=(stop,), daemon=True, name="agent-heartbeat")
        hb.start()
        self.log(f"agent {self.name!r} (pid {self.pid}) taking runs addressed to it")
        reaped = reap_stale(self.db)  # runs of an earlier agent of this name (or on this host) that died
        if reaped:
            self.log(f"reaped runs left by a dead worker or agent: {', '.join(f'#{r}' for r in reaped)}")
        try:
            while not stop.is_set():
                try:
                    self._step()
                except DBAPIError as e:  # the history is away for a while: keep the workers, try again
                    fault = storage_fault(e, str(self.db))
                    self.log(f"the history database failed ({fault or e.__class__.__name__}); trying again")
                    stop.wait(5.0)
                stop.wait(self.poll_s)
        finally:
            self._stop_workers()
            try:
                agent_stopped(self.factory, self.name, self.pid)
            except DBAPIError:
                pass  # its heartbeat goes stale instead
            self.log(f"agent {self.name!r} stopped")
        return 0

    def _check_name_free(self) -> None:
        """Two live agents of one name would split its runs and reap each other's: refuse. A dead agent's name (no
        heartbeat, or its pid gone on this host) is taken over."""
        with self.factory() as s:
            other = s.get(AgentRow, self.name)
        if other is None or not agent_alive(other) or other.pid == self.pid:
            return
        if other.hostname == socket.gethostname() and not psutil.pid_exists(other.pid or 0):
            return
        raise AgentNameTaken(f"an agent named {self.name!r} is already running (pid {other.pid} on "
                             f"{other.hostname}, last heartbeat {other.heartbeat_at:%H:%M:%S} UTC); give another "
                             f"--name, or stop that one first")

    def _beat(self, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                agent_heartbeat(self.factory, self.name, self.pid)
            except Exception as e:  # noqa: BLE001 - a database blip must not end the agent; a long one reaps it
                self.log(f"heartbeat failed: {e}")

    def _step(self) -> None:
        ended = [rid for rid, p in self.workers.items() if p.poll() is not None]
        for rid in ended:
            self.log(f"run #{rid} ended (worker exit {self.workers.pop(rid).returncode})")
        if ended:  # a worker killed outright left its run looking alive, and maybe its engine: end both now
            reap_stale(self.db)
        for rid in cancels_for(self.factory, list(self.workers)):
            if self.workers[rid].poll() is None:
                self.log(f"run #{rid}: cancel requested, stopping its worker")
                self.workers[rid].send_signal(signal.SIGTERM)
        while len(self.workers) < self.max_runs:
            rid = claim_next(self.factory, self.name, self.host)
            if rid is None:
                return
            self.log(f"took run #{rid}")
            self.workers[rid] = launch_worker(rid, self.db, agent_pid=self.pid)

    def _stop_workers(self) -> None:
        for p in self.workers.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for rid, p in self.workers.items():
            try:
                p.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                self.log(f"run #{rid}: worker {p.pid} did not stop in {STOP_WAIT_S:.0f} s; killing it")
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                reap_stale(self.db)  # the killed worker's engine is in its own group: the reaper ends it


def main(db: str | None, name: str | None, poll_s: float = POLL_S) -> int:
    from bench.worker import install_stop_signals

    stop = threading.Event()
    install_stop_signals(stop)
    agent = Agent(db=db if db is not None else _default_db(), name=name or socket.gethostname(), poll_s=poll_s,
                  log=lambda m: print(m, flush=True))
    return agent.run(stop)


def _default_db():
    from storage.db import default_db_path

    return default_db_path()
