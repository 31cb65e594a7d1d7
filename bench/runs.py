"""Starting, cancelling and reaping runs — what the UI (and the CLI) ask of the benchmark core.

Reaping: a run whose worker died (SIGKILL, out-of-memory kill, crash) is marked `aborted` and its engines are ended.
When it is certain (`worker_gone`: the run was made on this host and its worker pid is not running, or is running a
process started after the worker's last sign of life, i.e. a recycled pid) that happens at once, on the next Melt
command or dashboard page; otherwise (another host, a paused process) only once the heartbeat is STALE_AFTER old.
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
    (`--engine-arg=--api-key=...`, a token in the engine command) redacted, as in the stored argv."""
    doc = config.model_dump(mode="json", exclude={"engine": {"api_key"}})
    for eng in [doc["engine"], *(d["engine"] for d in doc.get("instances") or [])]:
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


def create_run(config: RunConfig, db: str | Path | None = None) -> int:
    """Insert a `queued` run holding the full config (secrets left out); nothing starts."""
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
        price_per_gpu_hour=config.price_per_gpu_hour, versions=base_versions(), host=host_info())


API_KEY_ENV = "MELT_ENGINE_API_KEY"  # how a run's API key reaches its worker: env, never argv or the database
ENGINE_PARTS_ENV = "MELT_ENGINE_SECRET_PARTS"  # ... and engine arguments holding secrets (JSON), the same way


def spawn_worker(run_id: int, db: str | Path | None = None, api_key: str | None = None,
                 engine_parts: dict | None = None) -> int:
    """Start `python -m bench.worker RUN_ID` in its own session (survives the UI); returns its pid."""
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
        p = subprocess.Popen([sys.executable, "-m", "bench.worker", str(run_id), "--db", url], cwd=ROOT, env=env,
                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    # heartbeat_at now: the worker process is older than this mark, so a reaper can tell it from a recycled pid
    Recorder(run_id, db).update_run(worker_pid=p.pid, heartbeat_at=utcnow())
    return p.pid


def start_run(config: RunConfig, db: str | Path | None = None) -> int:
    run_id = create_run(config, db)
    spawn_worker(run_id, db, api_key=config.engine.api_key, engine_parts=secret_engine_parts(config))
    return run_id


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
    if _pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        return True
    Recorder(run_id, db).set_status(RunStatus.cancelled, "cancelled (no live worker)")
    return True


def worker_gone(run: Run) -> bool:
    """Is the run's worker certainly dead? Only a run made on this host can tell (pids are per host). Certain when
    its pid runs nothing (or a zombie), or runs a process that started after the worker last proved alive
    (heartbeat_at, set right after the spawn too): a recycled pid. Anything else is uncertain."""
    import psutil

    if not run.worker_pid or (run.host or {}).get("hostname") != socket.gethostname():
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


def reap_stale(db: str | Path | None = None) -> list[int]:
    """Runs whose worker died become `aborted` and their engines are ended: at once when `worker_gone` is certain,
    else once the heartbeat is stale and the pid is not alive."""
    factory = open_db(db)
    reaped = []
    stale_before = utcnow() - STALE_AFTER
    for run in active_runs(factory):
        if worker_gone(run):
            why = f"worker process {run.worker_pid} ended without finishing the run (killed, crashed or out of memory)"
        elif (run.heartbeat_at or run.started_at or run.created_at) < stale_before and not _pid_alive(run.worker_pid):
            why = "worker stopped without finishing (stale heartbeat)"
        else:
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


__all__ = ["create_run", "stored_config", "secret_engine_parts", "spawn_worker", "start_run", "cancel_run",
           "reap_stale", "worker_gone", "to_url"]
