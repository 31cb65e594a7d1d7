"""Remote agents against one real PostgreSQL server on loopback: two `melt agent` processes and the queue API the
dashboard calls (bench.runs.start_run(..., agent=NAME)). Runs addressed to each agent run there and only there; an
agent killed with SIGKILL mid-run is detected and its run aborted with nothing left running; no run is taken twice;
a dead agent on another host is reaped from here without touching local pids."""
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import psutil
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import selectinload

from bench.cli import build_config, make_parser
from bench.runs import cancel_run, create_run, reap_stale, start_run
from storage.agents import AGENT_STALE_AFTER, claim_next, live_agents, register_agent
from storage.db import open_db
from storage.models import Agent, Run, RunStatus, utcnow

ROOT = Path(__file__).resolve().parents[2]
SIM = ["--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B"]


def _cfg(*extra: str, name: str = "agent run"):
    return build_config(make_parser().parse_args(["sweep", *SIM, "--name", name, *extra]))


SHORT = ("--levels", "2", "--requests", "6", "--input-len", "16", "--output-len", "8")
LONG = ("--levels", "2", "--requests", "400", "--input-len", "16", "--output-len", "4000")


def _agent(url: str, name: str, log: Path) -> subprocess.Popen:
    with open(log, "wb") as f:
        return subprocess.Popen([sys.executable, "-m", "bench", "--db", url, "agent", "--name", name, "--poll", "0.3"],
                                cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def _wait(url: str, run_id: int, done, timeout: float) -> Run:
    deadline = time.time() + timeout
    while True:
        with open_db(url)() as s:
            run = s.get(Run, run_id, options=[selectinload(Run.levels), selectinload(Run.instances)])
        if done(run) or time.time() > deadline:
            return run
        time.sleep(0.3)


def _sending(run: Run) -> bool:
    """Running, with its first level under load (not while the load generator is still starting)."""
    return run.status is RunStatus.running and bool(run.levels) and run.levels[-1].n_sent > 0


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _gone_within(pids: list[int], timeout: float) -> list[int]:
    deadline = time.time() + timeout
    while any(_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.2)
    return [p for p in pids if _alive(p)]


def _end(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def test_two_agents_run_what_is_addressed_to_them_and_a_killed_agent_is_aborted(pg_url, tmp_path):
    a = _agent(pg_url, "gpu-a", tmp_path / "a.log")
    b = _agent(pg_url, "gpu-b", tmp_path / "b.log")
    try:
        runs = {start_run(_cfg(*SHORT, name=f"for {t} {i}"), pg_url, agent=t): t
                for i, t in enumerate(["gpu-a", "gpu-b", "gpu-a", "gpu-b"])}
        pids = {"gpu-a": a.pid, "gpu-b": b.pid}
        for rid, target in runs.items():
            run = _wait(pg_url, rid, lambda r: r.status.finished, 240)
            logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
            assert run.status is RunStatus.completed, (run.status, run.error, logs[-3000:])
            assert run.agent == target and run.host["agent"] == target  # it ran there ...
            assert run.host["agent_pid"] == pids[target]                # ... and only there
            assert run.levels and run.levels[0].n_ok == 6
        assert {x.name for x in live_agents(open_db(pg_url))} == {"gpu-a", "gpu-b"}
        with open_db(pg_url)() as s:  # every run taken once, by its own agent: nothing left queued
            assert not s.scalars(select(Run).where(Run.status == RunStatus.queued)).all()

        # A cancel from "another host" goes through the agent (runs.cancel_requested -> SIGTERM to the worker).
        rid = start_run(_cfg(*LONG, name="cancel me"), pg_url, agent="gpu-b")
        run = _wait(pg_url, rid, _sending, 180)
        assert _sending(run), (run.status, run.error)
        assert cancel_run(rid, pg_url)
        run = _wait(pg_url, rid, lambda r: r.status.finished, 120)
        assert run.status is RunStatus.cancelled, run.error

        # A worker killed outright (OOM killer): its agent notices the exit and the run is aborted at once.
        rid = start_run(_cfg(*LONG, name="oom"), pg_url, agent="gpu-b")
        run = _wait(pg_url, rid, _sending, 180)
        assert _sending(run), (run.status, run.error)
        os.kill(run.worker_pid, signal.SIGKILL)
        run = _wait(pg_url, rid, lambda r: r.status.finished, 60)
        assert run.status is RunStatus.aborted and "worker process" in run.error, (run.status, run.error)
        assert _gone_within([i.pid for i in run.instances if i.pid], 60) == []

        # SIGKILL agent a mid-run: its worker stops the engine and the run ends aborted, saying why.
        rid = start_run(_cfg(*LONG, name="doomed"), pg_url, agent="gpu-a")
        run = _wait(pg_url, rid, _sending, 180)
        assert _sending(run), (run.status, run.error)
        worker, engines = run.worker_pid, [i.pid for i in run.instances if i.pid]
        assert _alive(worker) and engines and all(_alive(p) for p in engines)
        os.kill(a.pid, signal.SIGKILL)
        a.wait()
        run = _wait(pg_url, rid, lambda r: r.status is RunStatus.aborted, 120)
        assert run.status is RunStatus.aborted and "agent" in (run.error or ""), (run.status, run.error)
        assert _gone_within([worker, *engines], 60) == [], "the killed agent's worker or engine still runs"
        # and no one else took it: agent b never touched it; the dead agent drops out of the live list
        assert run.agent == "gpu-a" and reap_stale(pg_url) == []
        with open_db(pg_url)() as s:
            s.execute(update(Agent).where(Agent.name == "gpu-a")
                      .values(heartbeat_at=utcnow() - AGENT_STALE_AFTER - timedelta(seconds=1)))
            s.commit()
        assert {x.name for x in live_agents(open_db(pg_url))} == {"gpu-b"}
        listing = subprocess.run([sys.executable, "-m", "bench", "--db", pg_url, "agents"], cwd=ROOT,
                                 capture_output=True, text=True, timeout=120).stdout
        states = {ln.split()[0]: ln.split()[1] for ln in listing.splitlines()}
        assert states == {"gpu-a": "gone", "gpu-b": "alive"}, listing
    finally:
        _end(a)
        _end(b)
    assert b.returncode == 0


def test_no_run_is_taken_twice_by_agents_polling_at_once(pg_url):
    factory = open_db(pg_url)
    ids = [create_run(_cfg(*SHORT), pg_url, agent="twin") for _ in range(30)]
    taken: list[int] = []
    lock = threading.Lock()
    go = threading.Barrier(6)

    def taker(k: int) -> None:
        go.wait()
        while (rid := claim_next(factory, "twin", {"hostname": "h", "agent": "twin", "agent_pid": k})) is not None:
            with lock:
                taken.append(rid)

    threads = [threading.Thread(target=taker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(taken) == ids  # each queued run taken exactly once
    with factory() as s:
        assert {r.status for r in s.scalars(select(Run).where(Run.id.in_(ids)))} == {RunStatus.starting}


def test_a_dead_agent_on_another_host_is_reaped_here_and_a_waiting_run_is_not(db):
    factory = open_db(db)
    register_agent(factory, "far", "far-host", 4242)
    rid = create_run(_cfg(*SHORT), db, agent="far")
    waiting = create_run(_cfg(*SHORT), db, agent="nobody-yet")
    assert claim_next(factory, "far", {"hostname": "far-host", "agent": "far", "agent_pid": 4242}) == rid
    with factory() as s:  # its worker runs on far-host under a pid that, here, is this test process
        s.execute(update(Run).where(Run.id == rid).values(status=RunStatus.running, worker_pid=os.getpid()))
        s.execute(update(Run).where(Run.id == waiting).values(created_at=utcnow() - timedelta(hours=1)))
        s.commit()
    assert reap_stale(db) == []  # the agent is alive: nothing to do
    with factory() as s:
        s.execute(update(Agent).where(Agent.name == "far")
                  .values(heartbeat_at=utcnow() - AGENT_STALE_AFTER - timedelta(seconds=1)))
        s.commit()
    assert reap_stale(db) == [rid]  # and this process (the pid "on far-host") was not signalled
    with factory() as s:
        run, wait = s.get(Run, rid), s.get(Run, waiting)
        assert run.status is RunStatus.aborted and "far" in run.error and "heartbeat" in run.error
        assert wait.status is RunStatus.queued  # a run waiting for its agent is not a dead worker


def test_a_run_with_secrets_is_not_sent_to_an_agent(db):
    with pytest.raises(ValueError, match="agent"):
        start_run(_cfg(*SHORT, "--api-key", "s3cret"), db, agent="gpu-a")


def test_a_second_live_agent_of_one_name_is_refused(db, tmp_path):
    from bench.agent import Agent as AgentProc, AgentNameTaken

    register_agent(open_db(db), "solo", "another-host", 777)  # alive: it just beat
    with pytest.raises(AgentNameTaken, match="already running"):
        AgentProc(db=db, name="solo").run(threading.Event())
    r = subprocess.run([sys.executable, "-m", "bench", "--db", str(db), "agent", "--name", "solo"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "already running" in r.stderr and "Traceback" not in r.stderr, r.stderr
