"""Starting, cancelling and reaping runs — what the UI (and the CLI) ask of the benchmark core.

Runs addressed to a remote agent (bench/agent.py) are created `queued` with a target and no worker here; the agent
of that name takes them from the shared history. Cancelling such a run asks its agent (storage.agents).

Reaping: a run whose worker died (SIGKILL, out-of-memory kill, crash) is marked `aborted` and its engines are ended.
When it is certain (`worker_gone`: the run was made on this host and its worker pid is not running, or is running a
process started after the worker's last sign of life, i.e. a recycled pid) that happens at once, on the next Melt
command or dashboard page; otherwise (another host, a paused process) only once the heartbeat is STALE_AFTER old.
A run taken by an agent is also reaped, from any host, once that agent is gone (its heartbeat in `agents` stale, a
clean stop, or its name taken over by a new agent process): a dead agent's run is never left to look alive. Pids
are only ever looked at, or signalled, on the host the run's worker runs on.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from bench.config import RunConfig
from bench.sweep import base_versions, host_info
from engines.spec import redact_argv
from engines.supervisor import kill_tagged
from storage.db import check_writable, data_dir, open_db, to_url
from storage.models import Run, RunStatus, utcnow
from storage.recorder import Recorder, active_runs

ROOT = Path(__file__).resolve().parent.parent
STALE_AFTER = timedelta(seconds=30)
CLOCK_SLACK_S = 2.0  # psutil's start times come from whole-second boot time plus clock ticks


def stored_config(config: RunConfig) -> dict:
    """The config as the run row keeps it: no API key, and the value of every secret-named engine flag
    (`--engine-arg=--api-key=...`, a token in the engine command) redacted, as in the stored argv: of the engine,
    of every deployment instance and of every service's command."""
    doc = config.model_dump(mode="json", exclude={"engine": {"api_key"}})
    for eng in [doc["engine"], *(d["engine"] for d in [*(doc.get("instances") or []), *(doc.get("services") or [])])]:
        eng.pop("api_key", None)
        eng["extra_args"] = redact_argv(eng.get("extra_args") or [])
        if eng.get("engine_cmd"):
            eng["engine_cmd"] = redact_argv(eng["engine_cmd"])
    return doc


def secret_engine_parts(config: RunConfig) -> dict | None:
    """The engine argv parts whose stored copy is redacted, to hand to the worker outside the database (like the API
    key: environment only). None when nothing was redacted."""
    spec = config.engine
    parts = {}
    if redact_argv(spec.extra_args) != spec.extra_args:
        parts["extra_args"] = list(spec.extra_args)
    if spec.engine_cmd and redact_argv(spec.engine_cmd) != spec.engine_cmd:
        parts["engine_cmd"] = list(spec.engine_cmd)
    return parts or None


def create_run(config: RunConfig, db: str | Path | None = None, agent: str | None = None) -> int:
    """Insert a `queued` run holding the full config (secrets left out); nothing starts. With `agent`, the run is
    addressed to that remote agent, which takes it from the shared history (bench/agent.py)."""
    factory = open_db(db)
    spec = config.engine
    deployed = config.deployment()
    kinds = {d.engine.kind for d in deployed}
    # a deployment of several instances: the history row names them all ("gemma+qwen3"); engine "mix" when they differ
    model = spec.name_for_requests if len(deployed) == 1 else "+".join(d.name for d in deployed)[:300]
    return Recorder.create_run(
        factory, config=stored_config(config), name=config.name,
        engine_kind=spec.kind if len(kinds) == 1 else "mix", model=model, gpu=config.gpu or spec.sim_gpu,
        gpu_count=config.gpu_count, simulated=config.simulated, tags=config.tags,
        price_per_gpu_hour=config.price_per_gpu_hour, versions=base_versions(), host=host_info(), target_agent=agent)


API_KEY_ENV = "MELT_ENGINE_API_KEY"  # how a run's API key reaches its worker: env, never argv or the database
ENGINE_PARTS_ENV = "MELT_ENGINE_SECRET_PARTS"  # ... and engine arguments holding secrets (JSON), the same way


def spawn_worker(run_id: int, db: str | Path | None = None, api_key: str | None = None,
                 engine_parts: dict | None = None) -> int:
    """Start `python -m bench.worker RUN_ID` in its own session (survives the UI); returns its pid."""
    return launch_worker(run_id, db, api_key, engine_parts).pid


AGENT_PID_ENV = "MELT_AGENT_PID"  # set for a worker an agent started: that worker ends with its agent


def _die_with_parent():
    """A preexec_fn: in the child before exec, ask for SIGTERM when the parent (the agent) dies, so a killed agent's
    worker stops its engine and ends its run instead of running on unseen (Linux prctl PR_SET_PDEATHSIG). libc is
    looked up here, in the parent: the child of a threaded process should do as little as possible."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


def launch_worker(run_id: int, db: str | Path | None = None, api_key: str | None = None,
                  engine_parts: dict | None = None, agent_pid: int | None = None) -> subprocess.Popen:
    """spawn_worker, returning the Popen. With `agent_pid` (an agent starting it), the worker gets SIGTERM when
    that process dies, and knows (AGENT_PID_ENV) that it then ends its run as aborted."""
    url = check_writable(db)
    logs = data_dir() / "runs" / str(run_id)
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "worker.log", "ab") as log:
        env = dict(os.environ)
        env.pop(API_KEY_ENV, None)
        env.pop(ENGINE_PARTS_ENV, None)
        if api_key:
            env[API_KEY_ENV] = api_key
        if engine_parts:
            env[ENGINE_PARTS_ENV] = json.dumps(engine_parts)
        env.pop(AGENT_PID_ENV, None)
        if agent_pid:
            env[AGENT_PID_ENV] = str(agent_pid)
        p = subprocess.Popen([sys.executable, "-m", "bench.worker", str(run_id), "--db", url], cwd=ROOT, env=env,
                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                             preexec_fn=_die_with_parent() if agent_pid else None)
    # heartbeat_at now: the worker process is older than this mark, so a reaper can tell it from a recycled pid
    Recorder(run_id, db).update_run(worker_pid=p.pid, heartbeat_at=utcnow())
    return p


def start_run(config: RunConfig, db: str | Path | None = None, agent: str | None = None) -> int:
    """Queue the run and start its worker here; with `agent`, only queue it for that remote agent (which cannot be
    handed secrets outside the database, so a run with an API key or secret engine flags is refused for it)."""
    if agent:
        if config.engine.api_key or secret_engine_parts(config):
            raise ValueError("a run with an API key or secret engine arguments cannot be sent to an agent: those are "
                             "never stored, and an agent only reads the history")
        return create_run(config, db, agent=agent)
    run_id = create_run(config, db)
    spawn_worker(run_id, db, api_key=config.engine.api_key, engine_parts=secret_engine_parts(config))
    return run_id


THIS_MACHINE = "This machine"


def run_targets(db: str | Path | None = None) -> list[str]:
    """Where the Launch page can send a run: this machine first, then every live agent of the history by name."""
    from storage.agents import live_agents

    return [THIS_MACHINE, *(a.name for a in live_agents(open_db(db)))]


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _same_process(pid: int, launched_at) -> bool:
    """Is `pid` still the engine we launched, not a recycled pid? Its start time must match the recorded launch
    (engines may rewrite their command line with setproctitle, so the start time is the reliable mark)."""
    import psutil

    if launched_at is None:
        return False
    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:
        return False
    return abs(started - launched_at.timestamp()) < 10.0


def cancel_run(run_id: int, db: str | Path | None = None) -> bool:
    """SIGTERM the run's worker. A queued run that has no live worker is marked cancelled directly."""
    factory = open_db(db)
    with factory() as s:
        run = s.get(Run, run_id)
        if run is None:
            raise LookupError(f"run {run_id} not found")
        if run.status.finished:
            return False
        pid = run.worker_pid
        remote = run.agent is not None or run.target_agent is not None
        here, gone, hostname = _on_this_host(run), worker_gone(run), (run.host or {}).get("hostname")
    if remote:  # the worker is an agent's (maybe on another host): the agent delivers the SIGTERM
        from storage.agents import request_cancel

        return request_cancel(factory, run_id)
    if pid and not here:
        raise LookupError(f"run {run_id}'s worker runs on another host ({hostname}): "
                          "cancel it there")
    # the pid must still be the worker: a recycled pid (started after the worker's last heartbeat) is left alone
    if not gone and _pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        return True
    Recorder(run_id, db).set_status(RunStatus.cancelled, "cancelled (no live worker)")
    return True


def worker_gone(run: Run) -> bool:
    """Is the run's worker certainly dead? Only a run made on this host can tell (pids are per host). Certain when
    its pid runs nothing (or a zombie), or runs a process that started after the worker last proved alive
    (heartbeat_at, set right after the spawn too): a recycled pid. Anything else is uncertain."""
    import psutil

    if not run.worker_pid or not _on_this_host(run):
        return False
    try:
        p = psutil.Process(run.worker_pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return True
        started = p.create_time()
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False
    alive_at = run.heartbeat_at or run.started_at
    return alive_at is not None and started > alive_at.timestamp() + CLOCK_SLACK_S


def _on_this_host(run: Run) -> bool:
    return (run.host or {}).get("hostname") == socket.gethostname()


def _agent_gone(run: Run, by_name: dict) -> str | None:
    """Why the agent that took `run` is certainly gone, or None (not an agent's run, or its agent is alive)."""
    from storage.agents import agent_alive

    if run.agent is None:
        return None
    agent = by_name.get(run.agent)
    took_pid = (run.host or {}).get("agent_pid")
    if agent is None or (took_pid is not None and agent.pid != took_pid):
        return f"its agent {run.agent!r} (pid {took_pid}) is gone: another process took the name over"
    if agent.stopped_at is not None and took_pid == agent.pid:
        return f"its agent {run.agent!r} stopped without finishing the run"
    if not agent_alive(agent):
        return (f"its agent {run.agent!r} on {agent.hostname} stopped heartbeating (last at "
                f"{agent.heartbeat_at:%H:%M:%S} UTC): the agent or its host died")
    return None


def reap_stale(db: str | Path | None = None) -> list[int]:
    """Runs whose worker died become `aborted` and their engines are ended: at once when `worker_gone` is certain,
    or when the agent that took the run is gone; else once the heartbeat is stale (and, on this host, the pid is not
    alive). A queued run addressed to an agent waits for it and is left alone."""
    from storage.agents import agents

    factory = open_db(db)
    reaped = []
    stale_before = utcnow() - STALE_AFTER
    active = active_runs(factory)
    by_name = {a.name: a for a in agents(factory)} if any(r.agent for r in active) else {}
    for run in active:
        if run.status is RunStatus.queued and run.target_agent and run.agent is None:
            continue
        here = _on_this_host(run)
        if worker_gone(run):
            why = f"worker process {run.worker_pid} ended without finishing the run (killed, crashed or out of memory)"
        elif (gone := _agent_gone(run, by_name)) is not None:
            why = gone
        elif (run.heartbeat_at or run.started_at or run.created_at) < stale_before and not (
                here and _pid_alive(run.worker_pid)):
            why = "worker stopped without finishing (stale heartbeat)"
        else:
            continue
        if not here:  # its engines are on another host: their pids mean nothing here (that host's agent reaps)
            Recorder(run.id, db, factory).set_status(RunStatus.aborted, why)
            reaped.append(run.id)
            continue
        rec = Recorder(run.id, db, factory)
        with factory() as s:
            engines = [(i.pid, i.launched_at, i.proc_tag) for i in s.get(Run, run.id).instances if i.pid]
        for pid, launched_at, tag in engines:
            if _pid_alive(pid) and _same_process(pid, launched_at):
                try:
                    os.killpg(pid, signal.SIGKILL)  # engines run as their own process group leader
                except OSError:
                    pass
            # The group kill misses children that outlived a dead leader or left its group; the launch's
            # environment tag finds them wherever they are.
            kill_tagged(tag or "")
        rec.set_status(RunStatus.aborted, why)
        reaped.append(run.id)
    return reaped


__all__ = ["run_targets", "THIS_MACHINE", "create_run", "stored_config", "secret_engine_parts", "spawn_worker", "start_run", "cancel_run",
           "reap_stale", "worker_gone", "to_url"]


def planned_for(config: dict, levels: list[tuple[int, int | None]]) -> tuple[list[tuple[int, int | None]], float | None]:
    """(planned levels as (concurrency, requests or None), seconds per level or None) for progress bars, from a stored
    config and the (concurrency, n_requested) of the levels that ran. A Blitz and an SLO search choose their levels as
    they go, so their plan is what ran so far; an older or foreign config falls back to the levels too."""
    try:
        cfg = RunConfig.model_validate(config)
    except Exception:  # noqa: BLE001
        return list(levels), None
    if cfg.blitz is not None and levels:
        return list(levels), None
    if cfg.slo_search is not None:  # probes are chosen as it goes: the ones so far (or the first)
        seen = list(levels) or [(p.concurrency, cfg.workload.requests_for(p.concurrency)) for p in cfg.planned_levels()]
        return seen, cfg.workload.planned_seconds()
    return ([(p.concurrency, cfg.workload.requests_for(p.concurrency)) for p in cfg.planned_levels()],
            cfg.workload.planned_seconds())
