"""The run queue of remote agents (bench/agent.py), in the shared history: a dashboard addresses a queued run to an
agent by name; the agent of that name takes it with a row lock (`SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL:
two agents polling at once never wait on, or take, the same row) and a guarded status change (queued -> starting,
only if still queued: a run is never taken twice, on SQLite too, where the lock clause is not rendered and the one
writer at a time serializes takers). Agents heartbeat their row in `agents`, so any host can tell a dead one.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import sessionmaker

from storage.models import Agent, Run, RunStatus, utcnow

AGENT_STALE_AFTER = timedelta(seconds=15)  # an agent heartbeats every ~2 s; this much silence means it is gone


def register_agent(factory: sessionmaker, name: str, hostname: str, pid: int, version: str | None = None) -> None:
    """Insert or refresh the agent's row (a restarted agent takes its name over)."""
    now = utcnow()
    with factory.begin() as s:
        row = s.get(Agent, name, with_for_update=True)
        if row is None:
            s.add(Agent(name=name, hostname=hostname, pid=pid, started_at=now, heartbeat_at=now, version=version))
        else:
            row.hostname, row.pid, row.started_at, row.heartbeat_at = hostname, pid, now, now
            row.stopped_at, row.version = None, version


def agent_heartbeat(factory: sessionmaker, name: str, pid: int) -> None:
    with factory.begin() as s:
        s.execute(update(Agent).where(Agent.name == name, Agent.pid == pid).values(heartbeat_at=utcnow()))


def agent_stopped(factory: sessionmaker, name: str, pid: int) -> None:
    with factory.begin() as s:
        s.execute(update(Agent).where(Agent.name == name, Agent.pid == pid).values(stopped_at=utcnow()))


def agents(factory: sessionmaker) -> list[Agent]:
    with factory() as s:
        return list(s.scalars(select(Agent).order_by(Agent.name)))


def agent_alive(agent: Agent | None, now: datetime | None = None) -> bool:
    """Running and heartbeating (a clean stop or AGENT_STALE_AFTER of silence means gone)."""
    if agent is None or agent.stopped_at is not None:
        return False
    return agent.heartbeat_at >= (now or utcnow()) - AGENT_STALE_AFTER


def live_agents(factory: sessionmaker) -> list[Agent]:
    now = utcnow()
    return [a for a in agents(factory) if agent_alive(a, now)]


def claim_next(factory: sessionmaker, name: str, host: dict) -> int | None:
    """Take the oldest queued run addressed to agent `name`: it becomes `starting`, taken by `name`, on `host` (the
    agent's host_info, so reapers on that host can judge its pids). None when there is none."""
    with factory.begin() as s:
        run_id = s.scalar(select(Run.id).where(Run.status == RunStatus.queued, Run.target_agent == name,
                                               Run.cancel_requested.is_(False))
                          .order_by(Run.id).limit(1).with_for_update(skip_locked=True))
        if run_id is None:
            return None
        taken = s.execute(update(Run).where(Run.id == run_id, Run.status == RunStatus.queued)
                          .values(status=RunStatus.starting, agent=name, host=host, heartbeat_at=utcnow(),
                                  started_at=utcnow())).rowcount
        return run_id if taken == 1 else None


def address_run(factory: sessionmaker, run_id: int, agent: str) -> None:
    """Address a queued run to an agent (the dashboard's "Run on")."""
    with factory.begin() as s:
        s.execute(update(Run).where(Run.id == run_id, Run.status == RunStatus.queued).values(target_agent=agent))


def request_cancel(factory: sessionmaker, run_id: int) -> bool:
    """Ask the run's agent to cancel it. A run still queued is cancelled right here (no agent can take it after:
    claim_next only takes `queued`). True when anything changed."""
    now = utcnow()
    with factory.begin() as s:
        run = s.get(Run, run_id, with_for_update=True)
        if run is None or run.status.finished:
            return False
        run.cancel_requested = True
        if run.status is RunStatus.queued:
            run.status, run.finished_at, run.error = RunStatus.cancelled, now, "cancelled before an agent took it"
        return True


def cancels_for(factory: sessionmaker, run_ids: list[int]) -> list[int]:
    """Which of these (running) runs have a pending cancel."""
    if not run_ids:
        return []
    with factory() as s:
        return list(s.scalars(select(Run.id).where(Run.id.in_(run_ids), Run.cancel_requested.is_(True))))
