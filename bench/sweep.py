"""The sweep runner: one run = launch (or attach to) an engine, run each concurrency level, record everything.

Used by the background worker (UI runs) and in-process by the CLI, so both paths are identical. Never raises for a
failure of the thing being measured: that becomes a failed level / failed run with the cause stored. Finished levels
are always kept.

A write to the history database that fails for an outside reason (disk full, read-only, lost server: a
storage.db.StorageFault from the Recorder, met in any thread) sets the run's stop event, so load stops and the
engine is stopped exactly as for a cancel; the run then ends `failed` with the fault's one-line message (stored if
the database still takes that write). No further rows are attempted for the level that met it.
"""
from __future__ import annotations

import json
import os
import platform
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bench import __version__
from bench.config import RunConfig
from bench.diskspace import disk_space_warning
from engines.spec import REDACTED, redact_argv, redact_env
from engines.supervisor import direct_opener
from storage.db import StorageFault, data_dir
from storage.models import LevelStatus, RunStatus, utcnow
from storage.recorder import Recorder

Log = Callable[[str], None]


class SweepAborted(Exception):
    """The engine could not be started or reached: the run fails before any level."""


@dataclass
class SweepHooks:
    log: Log = lambda msg: None
    on_level: Callable[[dict], None] = lambda summary: None
    result: dict = field(default_factory=dict)  # filled at the end: {"status": RunStatus, "error": str | None}


def host_info() -> dict:
    return {"hostname": socket.gethostname(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}


def base_versions() -> dict:
    return {"melt": __version__, "python": platform.python_version()}


def vocab_for(model: str) -> int | None:
    from catalog import CatalogError, get_model

    try:
        return get_model(model).vocab_size
    except CatalogError:
        return None


# Control-plane calls to the engine never go through an HTTP proxy and never follow redirects (the load generator
# doesn't either).
_OPENER = direct_opener()


def _http_json(url: str, timeout: float = 5.0) -> dict | None:
    try:
        with _OPENER.open(url, timeout=timeout) as resp:  # noqa: S310 (loopback/user-given URL)
            return json.loads(resp.read() or b"null")
    except (urllib.error.URLError, OSError, ValueError):
        return None


def probe_openai(base_url: str, model: str, api_key: str | None, timeout: float = 30.0) -> None:
    """One real 1-token completion against an already running server; raises SweepAborted with the reason."""
    body = json.dumps({"model": model, "prompt": "hi", "max_tokens": 1}).encode()
    req = urllib.request.Request(f"{base_url}/v1/completions", data=body, method="POST",
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {api_key}"} if api_key else {})})
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            resp.read()
    except urllib.error.HTTPError as e:
        detail = e.read()[:500].decode(errors="replace")
        raise SweepAborted(f"{base_url} answered HTTP {e.code} to a 1-token completion for model {model!r}: {detail}")
    except (urllib.error.URLError, OSError) as e:
        raise SweepAborted(f"cannot reach {base_url}: {getattr(e, 'reason', e)}") from None


@dataclass
class _Telemetry:
    """Telemetry sampler + XID watcher + engine-metrics scraper for one run; every part is optional and degrades
    to a logged message: telemetry must never break a measurement."""

    rec: Recorder
    log: Log
    samples: list[dict] = field(default_factory=list)
    xids: list[tuple] = field(default_factory=list)
    sampler: object | None = None
    scrapers: list = field(default_factory=list)
    xid_watch: object | None = None
    note: str = ""
    facts_start: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    engine_rows: list[dict] = field(default_factory=list)
    monitor: object | None = None  # bench.live_monitor.LiveMonitor, fed every batch

    def _on_engine(self, row: dict, instance_id: int | None) -> None:
        with self.lock:
            self.engine_rows.append(row)
        if self.monitor is not None:
            self.monitor.feed_engine(row)
        self.rec.insert_engine_metrics([row], instance_id)

    def start(self, cfg: RunConfig, ups: list["_Up"]) -> None:
        """One GPU sampler for the box (the GPUs of every instance), one /metrics scraper per instance."""
        if cfg.telemetry_hz == 0:
            self.note = "GPU telemetry off (telemetry_hz 0): no power, energy or GPU health for this run"
            self.log(self.note)
            self.rec.event("info", self.note)
        else:
            # a simulated instance brings the simulated GPU's telemetry; real ones NVML over all their GPUs
            first = next((u for u in ups if u.spec.simulated), ups[0])
            gpus = sorted({g for u in ups for g in (u.spec.gpus or [])}) or None
            self._start_gpu(cfg, _sim_telemetry_urls(ups) or first.base_url, first.spec.kind, gpus)
        for u in ups:
            if u.proc is not None and not u.proc.plan.metrics:
                self.rec.event("info", f"no engine metrics: the {u.spec.kind} server of {u.name} has no /metrics "
                                       "endpoint")
                continue
            try:
                from telemetry.engine_metrics import MetricsScraper

                scraper = MetricsScraper(u.base_url, u.spec.kind,
                                         on_sample=lambda row, _i=u.instance_id: self._on_engine(row, _i))
                scraper.start()
                self.scrapers.append(scraper)
            except Exception as e:  # noqa: BLE001
                self.rec.event("info", f"engine metrics scraper of {u.name} not started: {e!r}")

    def _start_gpu(self, cfg: RunConfig, base_url: str | list[str], kind: str, gpus: list[int] | None) -> None:
        try:
            from telemetry.sampler import TelemetrySampler, make_source
        except ImportError as e:
            self.rec.event("info", f"telemetry unavailable: {e}")
            return
        try:
            source, self.note = make_source(kind, base_url, gpus, gpu_metrics_url=cfg.gpu_metrics_url)
            if type(source).__name__ == "NvmlSource":
                # shown, not hidden: on an H100 and an H200 NVML sampling in the client lowered vLLM's decode speed by
                # 6-8% at 1-16 concurrent requests (docs/PERFORMANCE.md, "Session C"); telemetry_hz 0 turns it off
                self.note = (f"{self.note} at {cfg.telemetry_hz:g} Hz (measured to slow vLLM's decode by 6-8% at 1-16 "
                             "concurrent requests on an H100/H200; --telemetry-hz 0 turns sampling off)")
            if self.note:
                self.log(self.note)
                self.rec.event("info", self.note)
            self.facts_start = self._facts(source)
            if self.facts_start:
                self.rec.event("gpu_facts", "GPU facts at start", payload={"phase": "start", "gpus": self.facts_start})
            self.sampler = TelemetrySampler(source, hz=cfg.telemetry_hz, on_batch=self._on_batch)
            self.sampler.start()
            if type(source).__name__ == "NvmlSource":
                from telemetry.nvml import XidWatcher

                watch = XidWatcher(self._on_xid, gpus=gpus)
                if watch.start():
                    self.xid_watch = watch
                else:
                    self.rec.event("info", f"XID events not watched: {watch.reason}")
        except Exception as e:  # noqa: BLE001
            self.rec.event("error", f"telemetry sampler failed to start: {e!r}")

    @staticmethod
    def _facts(source) -> dict:
        facts = getattr(source, "health_facts", None)
        try:
            return facts() if callable(facts) else {}
        except Exception:  # noqa: BLE001
            return {}

    def _on_batch(self, rows: list[dict]) -> None:
        with self.lock:
            self.samples.extend(rows)
        if self.monitor is not None:
            self.monitor.feed_telemetry(rows)
        self.rec.insert_telemetry(rows)

    def _on_xid(self, gpu: int | None, xid: int, t_ns: int) -> None:
        with self.lock:
            self.xids.append((gpu, xid, t_ns))
        self.rec.event("xid", f"XID {xid} on GPU {gpu}", payload={"gpu": gpu, "xid": xid, "t_ns": t_ns})

    def level_summary(self, start_ns: int, end_ns: int, output_tokens: int | None) -> dict:
        try:
            from telemetry.level import level_telemetry

            # The sampler hands rows over about once a second: wait for one taken after the level's end, or the
            # energy of its last second would be missing while J/token still divides by all its tokens.
            deadline = time.monotonic() + 3.0
            while self.sampler is not None and self.sampler.is_alive() and time.monotonic() < deadline:
                with self.lock:
                    if self.samples and self.samples[-1]["t_ns"] >= end_ns:
                        break
                time.sleep(0.05)
            with self.lock:
                rows, xids = list(self.samples), list(self.xids)
            return level_telemetry(rows, start_ns, end_ns, output_tokens, xids, self.note) if rows else {}
        except Exception as e:  # noqa: BLE001
            return {"error": repr(e)}

    def window(self, start_ns: int, end_ns: int) -> tuple[list[dict], list[dict]]:
        """Telemetry and engine-metric rows taken inside [start_ns, end_ns]."""
        from bench.alerts import in_window

        with self.lock:
            return in_window(self.samples, start_ns, end_ns), in_window(self.engine_rows, start_ns, end_ns)

    def stop(self, load_windows: list[tuple[int, int]]) -> None:
        stats = {}
        parts = [(f"scraper{i or ''}", sc) for i, sc in enumerate(self.scrapers)]
        for name, part in (*parts, ("xid", self.xid_watch), ("sampler", self.sampler)):
            try:
                if part is not None:
                    stats[name] = part.stop()
            except Exception as e:  # noqa: BLE001
                self.rec.event("error", f"telemetry {name} stop failed: {e!r}")
        if self.sampler is None:
            return
        self.rec.event("info", "telemetry stats (sampler CPU cost, scrape errors)", payload=stats)
        try:
            from telemetry.health import verdict

            facts_end = self._facts(getattr(self.sampler, "source", None))
            if facts_end:
                self.rec.event("gpu_facts", "GPU facts at end", payload={"phase": "end", "gpus": facts_end})
            with self.lock:
                rows, xids = list(self.samples), list(self.xids)
            v = verdict(rows, self.facts_start, facts_end, xids, load_windows)
            msg = f"GPU health: {v.get('status')}"
            self.rec.event("verdict", msg, payload=v)
            self.log(msg + "".join(f"\n  - {r}" for r in v.get("reasons", [])))
        except Exception as e:  # noqa: BLE001
            self.rec.event("error", f"health verdict failed: {e!r}")


def _sim_telemetry_urls(ups: list["_Up"]) -> list[str] | None:
    """The URLs of every sim instance when there are several on disjoint GPUs (a simulated multi-GPU deployment:
    the node's telemetry is theirs side by side); None otherwise (one sim instance, or sim instances modelling the
    same GPU, where each models it alone: the first one's telemetry stands for the GPU, as before)."""
    from bench.deploy import gpu_sharers

    sims = [u for u in ups if u.spec.simulated]
    if len(sims) < 2 or max(gpu_sharers([u.spec.gpus or [] for u in sims])) > 1:
        return None
    return [u.base_url for u in sims]


@dataclass
class _Up:
    """One instance of the run's deployment once it exists: its row, its process (None: a running server), where
    it listens and what its prompts are made with."""

    name: str
    spec: "object"            # engines.spec.EngineSpec
    weight: float
    instance_id: int | None = None
    proc: object | None = None
    base_url: str = ""
    model_dir: str | None = None
    tokenizer: str | None = None


def _dead(ups: list[_Up]) -> _Up | None:
    """The first launched instance whose process has died, if any."""
    return next((u for u in ups if u.proc is not None and not u.proc.alive()), None)


class _EngineWatch(threading.Thread):
    """Sets `stop` if an engine process dies mid-level, so the level ends promptly and is marked failed."""

    def __init__(self, ups: list[_Up], stop: threading.Event):
        super().__init__(daemon=True, name="engine-watch")
        self.ups, self.stop_evt, self.died = ups, stop, False
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.5):
            if _dead(self.ups) is not None:
                self.died = True
                self.stop_evt.set()
                return

    def close(self) -> None:
        self._done.set()


def run_sweep(run_id: int, db: str | Path | None, stop: threading.Event, hooks: SweepHooks | None = None,
              api_key: str | None = None, engine_parts: dict | None = None) -> RunStatus:
    """`api_key` and `engine_parts` (engine arguments holding secrets: bench.runs.secret_engine_parts) are passed in,
    never stored: the run row's config has them removed or redacted."""
    hooks = hooks or SweepHooks()
    rec = Recorder(run_id, db, on_fault=lambda fault: stop.set())  # a failed write stops the run like a cancel
    run = rec.load_run()
    cfg = RunConfig.model_validate(run.config)
    if api_key:
        cfg.engine = cfg.engine.model_copy(update={"api_key": api_key})
    if engine_parts:
        cfg.engine = cfg.engine.model_copy(update=engine_parts)
        if cfg.instances:  # the parts are the first instance's (bench.runs.secret_engine_parts reads cfg.engine)
            cfg.instances[0] = cfg.instances[0].model_copy(update={"engine": cfg.engine})
    rec.update_run(worker_pid=os.getpid(), heartbeat_at=utcnow())
    rec.set_status(RunStatus.starting)
    room = disk_space_warning(cfg, db)
    if room:
        hooks.log(room)
        rec.event("warning", room)
    held: list[_Up] = []  # every instance as soon as it exists: `finally` always stops each
    services: list[_Up] = []  # the deployment's non-LLM services (started first, stopped last; no LLM traffic)
    telem = _Telemetry(rec, hooks.log)
    telem.monitor, exporter = _live_parts(cfg, run_id, rec, hooks.log)
    load_windows: list[tuple[int, int]] = []
    status, error = RunStatus.failed, None
    try:
        _bring_up_services(cfg, rec, hooks.log, stop, services)
        _bring_up(cfg, rec, hooks.log, stop, held)
        if stop.is_set():
            raise KeyboardInterrupt
        for u in held:
            u.tokenizer = _prompt_tokenizer(cfg, u, rec, hooks.log)
        telem.start(cfg, held)
        telem.monitor.start()
        rec.set_status(RunStatus.running)
        status, error = _run_levels(cfg, rec, held, stop, telem, load_windows, hooks, services)
    except SweepAborted as e:
        status, error = RunStatus.failed, str(e)
        hooks.log(f"error: {e}")
    except StorageFault:
        pass  # handled below: rec.fault wins over whatever else the stop looked like
    except KeyboardInterrupt:
        status, error = RunStatus.cancelled, "cancelled" + ("" if load_windows else " before the first level finished")
    except Exception as e:  # noqa: BLE001 - a bug must still leave a finished, explained run and no engine
        status, error = RunStatus.failed, f"internal error: {e!r}"
        hooks.log(f"internal error: {e!r}")
        raise
    finally:
        # Each step on its own: a step that fails (the database among them) must not skip stopping the engine.
        _quietly(lambda: telem.stop(load_windows), hooks.log)
        _quietly(telem.monitor.stop, hooks.log)
        if exporter is not None:
            _quietly(exporter.stop, hooks.log)
        for u in services:  # a service that died mid-run: the LLM levels after it ran without it; say so
            if u.proc is not None and u.proc.ready_at is not None and not u.proc.alive():
                msg = f"service {u.name} had exited before the run ended: the levels after that ran without it"
                hooks.log(f"warning: {msg}")
                _quietly(lambda m=msg: rec.event("warning", m), hooks.log)
        for u in [*reversed(held), *reversed(services)]:  # the last started first; every one, whatever the others did
            if u.proc is not None:
                _stop_engine(u.proc, rec, u.instance_id, hooks.log)
        if cfg.blitz is not None and rec.fault is None:
            _quietly(lambda: _blitz_result(run_id, db, hooks.log), hooks.log)
        if rec.fault is not None:
            status, error = RunStatus.failed, (f"{rec.fault} (the run stopped there: its engine was stopped, the "
                                               f"results written before are kept)")
        hooks.result.update(status=status, error=error)
        _quietly(lambda: rec.set_status(status, error), hooks.log)
        if rec.fault is None:  # the Live charts' frames, stored once: a first viewer reads one row
            _quietly(lambda: _store_frames(run_id, db), hooks.log)
    return status


def _store_frames(run_id: int, db) -> None:
    from bench.run_frames import store

    store(run_id, db)


def _blitz_result(run_id: int, db, log: Log) -> None:
    from bench.blitz import headline
    from bench.blitz_run import store_result

    res = store_result(run_id, db)
    if res is not None:
        log(headline(res))


def _live_parts(cfg: RunConfig, run_id: int, rec: Recorder, log: Log):
    """The live monitor (alerts, stored as "alerts" events when the firing set changes) and, with metrics_port, the
    Prometheus exporter serving its snapshot."""
    from bench.alerts import summary_line
    from bench.live_monitor import LiveMonitor

    def on_change(alerts: list[dict], values: dict) -> None:
        level = monitor.level or {}
        try:
            rec.event("alerts", summary_line(alerts), payload={"alerts": alerts, "values": values,
                                                                "level_index": level.get("index"),
                                                                "concurrency": level.get("concurrency")})
        except StorageFault:
            pass
        if alerts:
            log(f"alerts: {summary_line(alerts)}")

    monitor = LiveMonitor(cfg.alerts, on_change=on_change,
                          info={"run_id": run_id, "engine": cfg.engine.kind, "model": cfg.engine.model,
                                "gpu": cfg.gpu, "simulated": cfg.engine.simulated})
    exporter = None
    if cfg.metrics_port is not None:
        from bench.prom_export import MetricsServer

        try:
            exporter = MetricsServer(cfg.metrics_port, monitor.snapshot).start()
            kind, msg, payload = ("info", f"Prometheus metrics of this run at http://127.0.0.1:{exporter.port}/metrics",
                                  {"metrics_port": exporter.port})
        except OSError as e:
            kind, msg, payload = ("warning", f"Prometheus exporter not started on 127.0.0.1:{cfg.metrics_port}: "
                                             f"{e.strerror or e}", None)
        log(msg if kind == "info" else f"warning: {msg}")
        try:
            rec.event(kind, msg, payload=payload)
        except StorageFault:
            pass  # recorded as rec.fault: the run stops at its first step
    return monitor, exporter


def _quietly(step: Callable[[], None], log: Log) -> None:
    """Run a clean-up step; a storage fault is already reported (rec.fault), anything else is logged."""
    try:
        step()
    except StorageFault:
        pass
    except Exception as e:  # noqa: BLE001
        log(f"warning: clean-up step failed: {e!r}")


def _bring_up(cfg: RunConfig, rec: Recorder, log: Log, stop: threading.Event, held: list[_Up]) -> None:
    """Launch (or attach to) every instance of the deployment, one after another, each ready before the next: two
    vLLMs starting together on one GPU each count the other's memory as their own (vLLM issue #55827), and a
    deployment that cannot start should fail before it occupies more GPUs. One that fails raises SweepAborted naming
    it; the caller's `finally` then stops the ones already up (and the failed one's remains)."""
    deployed = cfg.deployment()
    many = len(deployed) > 1
    for n, d in enumerate(deployed):
        if stop.is_set():
            return
        up = _Up(d.name, d.engine, d.weight)
        held.append(up)
        if many:
            log(f"instance {n + 1}/{len(deployed)}: {d.name} ({d.engine.kind} / {d.engine.name_for_requests})")
        try:
            _bring_up_engine(d.engine, rec, log, stop, up, sub=d.name if many else None)
        except SweepAborted as e:
            if many:
                rest = [x.name for x in deployed[n + 1:]]
                raise SweepAborted(f"instance {d.name} did not start: {e}" + (
                    f" (the others were stopped; not started: {', '.join(rest)})" if rest
                    else " (the others were stopped)")) from None
            raise


def _bring_up_services(cfg: RunConfig, rec: Recorder, log: Log, stop: threading.Event, held: list[_Up]) -> None:
    """Start the deployment's non-LLM services (RunConfig.services, engine kind custom) one after another, each
    healthy before the next and before any LLM instance (the planner's start order); one that fails raises
    SweepAborted naming it, and the caller's `finally` stops the ones already up."""
    for n, svc in enumerate(cfg.services):
        if stop.is_set():
            return
        up = _Up(svc.name, svc.engine, 0.0)
        held.append(up)
        log(f"service {n + 1}/{len(cfg.services)}: {svc.name} ({svc.engine.model})")
        try:
            _bring_up_engine(svc.engine, rec, log, stop, up, sub=svc.name)
        except SweepAborted as e:
            raise SweepAborted(f"service {svc.name} did not start: {e} (the services already up were stopped; no LLM "
                               "instance was started)") from None


def instance_dir_name(name: str) -> str:
    """A deployment entry's directory under runs/ID/: its name with anything but letters, digits, - _ . replaced
    (plus a short hash of the name then, so two names never share one), and never "." or ".." (the run's own
    directory or the one above it)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    if safe != name or not safe.strip("."):   # "a/b" and "a_b" are two names: never one directory
        import hashlib

        safe = f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:6]}"
    return safe


def _bring_up_engine(spec, rec: Recorder, log: Log, stop: threading.Event, up: _Up, sub: str | None = None) -> None:
    """Launch (or attach to) one engine instance: fills `up` (its process the moment it exists, its base URL).
    `sub`: the instance's name in a deployment of several (its files go to runs/ID/NAME/)."""
    name_cols = {"name": up.name, "weight": up.weight} if sub else {}
    if spec.kind == "openai":
        assert spec.base_url
        instance_id = rec.add_instance(kind="openai", model=spec.name_for_requests, base_url=spec.base_url,
                                       state="external", launched_at=utcnow(), **name_cols)
        up.instance_id, up.base_url = instance_id, spec.base_url
        probe_openai(spec.base_url, spec.name_for_requests, spec.api_key)
        info = _http_json(f"{spec.base_url}/version") or {}
        rec.update_instance(instance_id, version=info.get("version"), ready_at=utcnow(), state="ready")
        rec.merge_versions({"engine": info.get("version")})
        log(f"using running server {spec.base_url}")
        return

    from engines.registry import build_plan, engine_version
    from engines.supervisor import EngineProcess, EngineStartError, ensure_port_free, free_port

    hidden = [a for a in [*(spec.engine_cmd or []), *spec.extra_args] if REDACTED in a]
    if hidden:  # a stored run started again: its secrets were never stored, so the engine would get the placeholder
        raise SweepAborted(f"engine argument {hidden[0]!r} held a secret that is not stored with the run: "
                           f"give it again (--engine-arg, or the Launch form's extra arguments)")
    workdir = data_dir() / "runs" / str(rec.run_id)
    if sub:
        workdir = workdir / instance_dir_name(sub)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if spec.port:
            ensure_port_free(spec.host, spec.port)
        port = spec.port or free_port(spec.host)
        plan = build_plan(spec, spec.host, port, workdir)
    except (EngineStartError, ValueError) as e:
        raise SweepAborted(str(e)) from None
    argv_shown, env_shown = redact_argv(plan.argv), redact_env(plan.env)
    instance_id = rec.add_instance(kind=spec.kind, model=spec.name_for_requests, argv=argv_shown, env=env_shown,
                                   base_url=plan.base_url, gpus=spec.gpus or [], log_path=str(workdir / "engine.log"),
                                   state="created", **name_cols)
    up.instance_id, up.base_url = instance_id, plan.base_url
    who = f"{sub}: " if sub else ""

    last_log = [0.0]

    def on_event(kind: str, message: str) -> None:
        try:
            _on_event(kind, message)
        except StorageFault:
            pass  # recorded; the run is stopping

    def _on_event(kind: str, message: str) -> None:
        if kind == "state":
            rec.update_instance(instance_id, state=message)
        elif kind == "phase":
            rec.update_instance(instance_id, phase=message)
            rec.event("phase", who + message)
            log(f"engine: {who}{message}")
        elif kind == "log" and time.monotonic() - last_log[0] >= 1.0:  # a rolling tail for the UI, <= 1 write/s
            last_log[0] = time.monotonic()
            rec.update_instance(instance_id, log_tail=proc.log_tail(60))

    proc = EngineProcess(plan, workdir / "engine.log", on_event=on_event)
    up.proc = proc
    # the directory the engine serves (its tokenizer makes the text prompts): the dummy dir Melt wrote or a local one
    written = workdir / "dummy-model"
    up.model_dir = str(written) if spec.dummy_weights and written.is_dir() else (
        spec.model if Path(spec.model).expanduser().is_dir() else None)
    version = None
    try:
        version = engine_version(spec.kind, spec.engine_cmd)
    except Exception:  # noqa: BLE001
        pass
    rec.merge_versions({f"engine.{sub}" if sub else "engine": version})
    log(f"launching {who}{spec.kind} engine: {' '.join(argv_shown)}")
    try:
        proc.start()
        rec.update_instance(instance_id, pid=proc.pid, proc_tag=proc.tag, launched_at=utcnow(), version=version)
        startup = proc.wait_ready(spec.startup_timeout_s, stop=stop)
    except EngineStartError as e:  # the caller's `finally` stops whatever is left of the engine
        rec.update_instance(instance_id, log_tail=getattr(e, "log_tail", "") or proc.log_tail(),
                            error=str(e), state="failed")
        if stop.is_set():
            raise KeyboardInterrupt from None
        raise SweepAborted(str(e)) from None
    if version is None:
        version = (_http_json(f"{plan.base_url}/version") or {}).get("version")
        rec.merge_versions({f"engine.{sub}" if sub else "engine": version})
    rec.update_instance(instance_id, ready_at=utcnow(), startup_s=startup, log_tail=proc.log_tail(), version=version)
    log(f"engine {who}ready in {startup:.1f}s at {plan.base_url}")


def _prompt_tokenizer(cfg: RunConfig, up: _Up, rec: Recorder, log: Log) -> str | None:
    """The tokenizer.json the text prompts to instance `up` are made with (None for token-id prompts), recorded with
    its fingerprint; SweepAborted saying what to pass when there is none. Each instance of a deployment may serve
    another model: each has its own."""
    from bench.prompts import PromptError, load_prompt_file, resolve_tokenizer
    from catalog.tokenizer import fingerprint

    wl, spec, base_url = cfg.workload, up.spec, up.base_url
    who = f" of {up.name}" if len(cfg.deployment()) > 1 else ""
    if wl.prompt_file:
        try:
            rows = load_prompt_file(wl.prompt_file)
        except PromptError as e:
            raise SweepAborted(str(e)) from None
        if all(r.text is not None for r in rows) and not wl.prefix_len:
            rec.event("info", f"prompts: {len(rows)} text rows of {wl.prompt_file}, sent as they are")
            return None
    if wl.prompt_format == "token-ids":
        msg = "prompts: token ids (the server does not tokenize them; not comparable with text runs)"
        rec.event("info", msg)
        log(msg)
        return None
    simulated_server = False
    if spec.kind == "openai":
        card = ((_http_json(f"{base_url}/v1/models") or {}).get("data") or [{}])[0]
        simulated_server = bool(card.get("simulated"))
    try:
        path, how = resolve_tokenizer(explicit=wl.tokenizer, model=spec.model, engine_kind=spec.kind,
                                      model_dir=up.model_dir, catalog_vocab=vocab_for(spec.model),
                                      simulated_server=simulated_server)
    except PromptError as e:
        raise SweepAborted(f"prompts{who}: {e}" if who else str(e)) from None
    fp = fingerprint(path)
    rec.merge_versions({f"tokenizer{'.' + up.name if who else ''}": fp})
    msg = f"prompts{who}: text through the tokenizer of {how} (sha256 {fp})"
    rec.event("info", msg, payload={"tokenizer": str(path), "fingerprint": fp})
    log(msg)
    return str(path)


def _stop_engine(proc, rec: Recorder, instance_id: int | None, log: Log) -> None:
    try:
        report = proc.stop()
    except Exception as e:  # noqa: BLE001
        report = {"error": repr(e)}
    if instance_id is not None:
        _quietly(lambda: rec.update_instance(instance_id, stopped_at=utcnow(), log_tail=proc.log_tail(),
                                             exit_code=(report or {}).get("exit_code")), log)
    leftovers = (report or {}).get("leftover_pids") or (report or {}).get("gpu_pids")
    if leftovers:
        log(f"warning: engine processes left after stop: {leftovers}")
        _quietly(lambda: rec.event("error", f"engine processes left after stop: {leftovers}", payload=report), log)


def _run_levels(cfg: RunConfig, rec: Recorder, ups: list[_Up], stop: threading.Event, telem: _Telemetry,
                load_windows: list[tuple[int, int]], hooks: SweepHooks,
                service_ups: list[_Up] | None = None) -> tuple[RunStatus, str | None]:
    from bench.loadgen import LevelPlan, LoadGenError, Target, run_level
    from bench.service_load import ServiceLoad, ServiceTarget
    from bench.service_load import describe as describe_service
    from bench.metrics import per_instance, summarize
    from bench.steady import steady_summary
    from bench.server_cpu import CpuWindow
    from bench.server_cpu import describe as describe_server_cpu

    from bench.blitz import level_workload, next_step, plan_after, search_point

    base_wl, spec = cfg.workload, cfg.engine
    wl = base_wl
    # Where requests go: every instance by its weight (one instance: all of them), each with its own served model
    # name and tokenizer. The load generator routes; nothing sits in between.
    targets = [Target(u.base_url, u.spec.name_for_requests, u.weight, u.instance_id, u.tokenizer,
                      vocab_for(u.spec.model), u.name) for u in ups]
    first = targets[0]
    many = len(ups) > 1
    # the services' own traffic (a recipe's service `request`), beside each level's LLM load
    by_name = {u.name: u for u in service_ups or []}
    svc_targets = [ServiceTarget(d.name, by_name[d.name].base_url, d.request) for d in cfg.services
                   if d.request is not None and d.name in by_name]
    search = _Search(cfg, hooks, rec, telem.monitor) if cfg.slo_search is not None else None
    # a Blitz run appends to `planned` as its search goes; an SLO search yields its probes into it
    planned = cfg.planned_levels() if search is None else []
    blitz_search: list[dict] = []
    proc = ups[0].proc  # where token counts come from is the engine adapter's word (LaunchPlan.stream_usage)
    if many and any(u.proc is not None and u.proc.plan.stream_usage != "server" for u in ups):
        raise SweepAborted("an instance whose streams carry no usage (llama.cpp) cannot be part of a deployment of "
                           "several instances yet: run it on its own")
    trace = None
    if wl.prompt_file:
        from bench.prompts import load_prompt_file, trace_arrivals

        trace = trace_arrivals(load_prompt_file(wl.prompt_file))  # already checked by _prompt_tokenizer
    failed: list[str] = []  # causes of failed levels, when the user chose to go on after them
    if proc is not None and proc.plan.stream_usage != "server":
        note = (f"token counts: the {spec.kind} server's streams carry no usage; a stream that ends at the length "
                "limit counts max_tokens (held with min_tokens), prompts count the exact length they were made to; "
                "any other ending is an error (levels: usage_source=finish-length)")
        hooks.log(note)
        rec.event("info", note)

    def level_failed(cause: str) -> tuple[RunStatus, str] | None:
        """A level failed with `cause`: end the run (on_level_failure stop) or note it and go on."""
        hooks.log(f"error: {cause}")
        if cfg.on_level_failure == "stop":
            rest = len(planned) - idx - 1
            return RunStatus.failed, cause + (f"; {rest} remaining level(s) skipped (on_level_failure=stop)"
                                              if rest else "")
        failed.append(cause)
        return None

    for idx, lvl in enumerate(planned if search is None else search.levels(planned)):
        if stop.is_set():
            return RunStatus.cancelled, "cancelled"
        conc, rate = lvl.concurrency, lvl.request_rate
        wl = level_workload(base_wl, cfg.blitz, lvl.phase) if cfg.blitz else base_wl
        n_req = wl.requests_for(conc)
        level_id = rec.start_level(idx, conc, n_req, rate, repeat=lvl.repeat)
        plan = LevelPlan.from_workload(wl, base_url=first.base_url, model=first.model, concurrency=conc,
                                       request_rate=rate, seed=wl.seed + idx, api_key=cfg.engine.api_key,
                                       vocab_size=first.vocab_size, tokenizer_path=first.tokenizer_path,
                                       targets=targets, instance_id=first.instance_id)
        if trace is not None and plan.steady_rule:  # a trace is replayed once per level, not to a steady state
            plan.n_requests = n_req = len(trace)
        if proc is not None:
            plan.stream_usage = proc.plan.stream_usage  # where token counts come from (the engine's adapter says)
        what = (f"{n_req} requests" if n_req is not None else f"{wl.duration_s:g} s" if wl.duration_s is not None
                else f"until {wl.min_steady_s:g} s of steady state and {wl.min_requests_per_user} requests per user "
                     f"(at most {wl.max_level_s:g} s)")
        extra = (f", {rate:g} req/s" + (f" (burstiness {wl.burstiness:g})" if wl.burstiness != 1 else "")
                 if rate is not None else f", ramp-up {plan.ramp_s:g} s" if plan.ramp_s else "")
        extra += f", repeat {lvl.repeat + 1}/{cfg.repeat}" if cfg.repeat > 1 else ""
        extra += f", Blitz {lvl.phase}" if lvl.phase else ""
        hooks.log(f"level {idx + 1}/{len(planned)}: concurrency {conc}{extra}, {what}")
        level_stop = threading.Event()
        monitor = telem.monitor
        monitor.start_level(idx, conc, rate)
        relay = _relay(stop, level_stop)
        watch = _EngineWatch(ups, level_stop)
        watch.start()
        results: list = []

        def on_results(batch, _level_id=level_id) -> None:
            results.extend(batch)
            monitor.feed_results(batch)
            if rec.fault is None:  # after a failed write, none more: the stop is on its way to the shards
                try:
                    rec.insert_requests(_level_id, batch)
                except StorageFault:
                    pass

        last = [0.0]

        def on_progress(p: dict, _level_id=level_id) -> None:
            now = time.monotonic()
            if now - last[0] >= 1.0 and rec.fault is None:
                last[0] = now
                try:
                    rec.update_level(_level_id, n_sent=p.get("sent", 0), n_ok=p.get("ok", 0),
                                     n_err=p.get("err", 0))
                    rec.heartbeat()
                except StorageFault:
                    pass

        cpu = CpuWindow.open({u.name: u.proc for u in ups})
        svc_load, svc_summary = ServiceLoad(svc_targets, seed=wl.seed + idx), []

        def log_services(summaries: list[dict], _idx=idx) -> None:
            for sv in summaries:
                hooks.log(f"level {_idx + 1}: {describe_service(sv)}")
        try:
            svc_load.start()
            outcome = run_level(plan, procs=cfg.client_procs, on_results=on_results, on_progress=on_progress,
                                stop=level_stop)
        except LoadGenError as e:  # the level never ran (open-file limit, client start-up failure)
            cause = f"load generator failed at level {idx + 1} (concurrency {conc}): {e}"
            svc_summary = svc_load.stop()   # what the services were sent meanwhile is kept with the failed level
            log_services(svc_summary)
            kept = {"concurrency": conc, "request_rate": rate, "services": svc_summary} if svc_summary else None
            rec.finish_level(level_id, LevelStatus.failed, kept, error=cause)
            monitor.end_level({"concurrency": conc, "request_rate": rate}, "failed")
            if search is not None:
                search.judge(lvl, None, level_id)
            end = level_failed(cause)
            if end:
                return end
            continue
        except BaseException:  # hard interrupt or a bug: never leave the level row `running`
            rec.finish_level(level_id, LevelStatus.cancelled if stop.is_set() else LevelStatus.failed, None,
                             error="interrupted")
            raise
        finally:
            relay.close()
            watch.close()
            svc_summary = svc_summary or svc_load.stop()   # stop() is idempotent; joined on every path
        if rec.fault is not None:  # keep what the database still takes, then end the run with the fault
            _quietly(lambda: rec.finish_level(level_id, LevelStatus.failed, None, error=str(rec.fault)), hooks.log)
            raise rec.fault
        summary = summarize(results, outcome, wl.slo)
        # Beside the whole-level (vllm bench) figures, never instead of them.
        summary["steady"] = steady_summary(results, outcome.start_ns, outcome.take_until_ns, users=conc,
                                           open_loop=rate is not None or trace is not None)
        summary.update(repeat=lvl.repeat, ramp_s=outcome.ramp_s, stop_reason=outcome.stop_reason,
                       burstiness=wl.burstiness if rate is not None else None)
        server_cpu = cpu.close()
        if server_cpu:
            summary["server_cpu"] = server_cpu
            hooks.log(f"level {idx + 1}: {describe_server_cpu(server_cpu)}")
        if lvl.phase:
            summary["blitz"] = {"phase": lvl.phase}
        if plan.stream_usage != "server":
            summary["usage_source"] = plan.stream_usage
        if many:  # per instance beside the whole box (the top-level figures are the box's)
            summary["instances"] = per_instance(results, outcome, wl.slo, targets)
        if svc_targets:  # not in the LLM figures: a service's answers carry no tokens
            summary["services"] = svc_summary
            log_services(svc_summary)
        if outcome.stop_reason:
            hooks.log(f"level {idx + 1}: {outcome.stop_reason}")
            if outcome.stop_reason.startswith("hard cap"):
                rec.event("info", f"level {idx + 1}: {outcome.stop_reason}", level_id=level_id)
        summary.setdefault("concurrency", conc)
        summary["roofline"] = _roofline(summary, cfg)
        summary.setdefault("start_ns", outcome.start_ns)
        summary.setdefault("end_ns", outcome.end_ns)
        load_windows.append((outcome.start_ns, outcome.end_ns))
        tele = telem.level_summary(outcome.start_ns, outcome.end_ns, summary.get("output_tokens"))
        if tele:
            summary["telemetry"] = tele
        _level_alerts(cfg, summary, telem, outcome, rec, level_id, hooks.log, idx)
        if search is not None:
            search.judge(lvl, summary, level_id)
        # The load generator may see the dead engine (connection refused/reset) before the watch's next poll.
        dead = _dead(ups)
        if dead is not None:
            proc = dead.proc
            code = proc.exit_code
            how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
            cause = f"engine {dead.name + ' ' if many else ''}{how} during level {idx + 1} (concurrency {conc})"
            tail = proc.log_tail(20)
            monitor.end_level(summary, "failed")
            rec.finish_level(level_id, LevelStatus.failed, summary, error=cause, telemetry=tele)
            rec.event("error", cause, level_id=level_id, payload={"log_tail": tail})
            hooks.log(f"error: {cause}\n{tail}")
            hooks.on_level(summary | {"status": "failed"})
            return RunStatus.failed, f"{cause}; last log lines:\n{tail}"
        if outcome.stalled and not stop.is_set():
            # a hung engine: every request is accounted for (the silent ones as "stalled"), the level is failed
            n_stalled = sum(1 for r in results if (r.error or "").startswith("stalled"))
            cause = (f"engine stalled during level {idx + 1} (concurrency {conc}): "
                     f"{outcome.stalled.removeprefix('stalled: ')}; {n_stalled} request(s) failed as stalled")
            monitor.end_level(summary, "failed")
            rec.finish_level(level_id, LevelStatus.failed, summary, error=cause, telemetry=tele)
            rec.event("error", cause, level_id=level_id)
            hooks.on_level(summary | {"status": "failed"})
            end = level_failed(cause)
            if end:
                return end
            continue
        if stop.is_set():
            monitor.end_level(summary, "cancelled")
            rec.finish_level(level_id, LevelStatus.cancelled, summary, error="cancelled", telemetry=tele)
            hooks.on_level(summary | {"status": "cancelled"})
            return RunStatus.cancelled, f"cancelled during level {idx + 1} (concurrency {conc})"
        monitor.end_level(summary, "completed")
        rec.finish_level(level_id, LevelStatus.completed, summary, telemetry=tele)
        hooks.on_level(summary | {"status": "completed"})
        if cfg.blitz and lvl.phase == "search":
            blitz_search.append(search_point(conc, "completed", summary))
            step = next_step(blitz_search, cfg.blitz)
            planned.extend(plan_after(step, cfg.blitz))  # the loop goes on over what is appended
            hooks.log(f"Blitz: {step['reason']}" + (f"; next: {step['action']} at concurrency {step['concurrency']}"
                                                    if step["concurrency"] else ""))
            rec.event("blitz_search", step["reason"], level_id=level_id, payload=step)
            if step["action"] == "fail":
                return RunStatus.failed, f"Blitz: {step['reason']}"
    if search is not None:
        search.finish()
    if failed:  # on_level_failure=continue: the run finished, and says which levels did not
        return RunStatus.completed, f"{len(failed)} of {len(cfg.levels)} level(s) failed: " + "; ".join(failed)
    return RunStatus.completed, None


def _roofline(summary: dict, cfg: RunConfig) -> dict | None:
    """The level's share of the GPU's roofline (bench/roofline.py); None when the GPU or model is not in the catalog
    (say --gpu for a real engine), when the deployment serves several models, or when the computation fails: it must
    never break a measurement."""
    from bench.roofline import level_roofline

    if len({d.engine.model for d in cfg.deployment()}) > 1:
        return None  # several models: one model's roofline against the box's tok/s would mean nothing
    try:
        return level_roofline(summary, cfg.gpu, cfg.engine.model, gpus=cfg.gpu_count,
                              quantization=cfg.engine.quantization, kv_cache_dtype=cfg.engine.kv_cache_dtype)
    except Exception:  # noqa: BLE001
        return None


def _level_alerts(cfg: RunConfig, summary: dict, telem: _Telemetry, outcome, rec: Recorder, level_id: int,
                  log: Log, idx: int) -> None:
    """summary["alerts"]: the thresholds evaluated on the finished level (its p99s, tok/s, errors, the GPU and engine
    rows of its window), logged and stored with the level."""
    from bench.alerts import evaluate, level_values, summary_line

    try:
        tele_rows, eng_rows = telem.window(outcome.start_ns, outcome.end_ns)
        values = level_values(summary, tele_rows, eng_rows)
        summary["alerts"] = evaluate(values, cfg.alerts)
        summary["alert_values"] = values
    except Exception as e:  # noqa: BLE001 - an alert bug must not lose a level
        summary["alerts"] = []
        rec.event("error", f"alert evaluation failed: {e!r}", level_id=level_id)
        return
    if summary["alerts"]:
        log(f"level {idx + 1} alerts: {summary_line(summary['alerts'])}")


class _Search:
    """The SLO search driving a sweep: yields probes as PlannedLevels, judges each finished level, stores the
    verdict on the level (summary["slo_search"]) and the answer as an "slo_search" event."""

    def __init__(self, cfg: RunConfig, hooks: SweepHooks, rec: Recorder, monitor):
        from bench.slo_search import SloSearch

        self.spec, self.hooks, self.rec, self.monitor = cfg.slo_search, hooks, rec, monitor
        self.state = SloSearch(cfg.slo_search)
        self.by_value: dict[float, dict] = {}
        hooks.log(f"SLO search: {self.spec.describe()}" + (f" (preset {self.spec.preset})" if self.spec.preset
                                                            else ""))

    def levels(self, planned: list):
        from bench.config import PlannedLevel

        while (v := self.state.next_value()) is not None:
            lvl = (PlannedLevel(concurrency=int(v)) if self.spec.mode == "concurrency"
                   else PlannedLevel(concurrency=self.spec.concurrency_cap, request_rate=v))
            planned.append(lvl)
            yield lvl

    def judge(self, lvl, summary: dict | None, level_id: int) -> None:
        from bench.slo_search import level_meets

        value = float(lvl.concurrency if self.spec.mode == "concurrency" else lvl.request_rate)
        if summary is None:
            meets, checks = False, [{"what": "level failed", "ok": False}]
        else:
            meets, checks = level_meets(summary, self.spec.limits, self.spec.max_error_rate)
            summary["slo_search"] = {"probe": len(self.state.probes), "value": value, "meets": meets,
                                     "checks": checks}
            self.by_value[value] = summary
        self.state.record(value, meets)
        self.monitor.search = self.state.result()
        failed = [c["what"] for c in checks if not c["ok"]]
        self.hooks.log(f"SLO search probe {len(self.state.probes)}: {value:g} "
                       + ("meets the limits" if meets else "misses: " + ", ".join(failed)))

    def finish(self) -> dict:
        res = self.state.result()
        best = self.by_value.get(res["best"]) if res["best"] is not None else None
        res["goodput_req_s"] = best.get("goodput_req_s") if best else None
        res["output_tok_s"] = best.get("output_tok_s") if best else None
        what = "concurrency" if self.spec.mode == "concurrency" else "request rate"
        msg = (f"SLO search: highest {what} meeting the limits = {res['best']:g}, goodput "
               f"{res['goodput_req_s'] or 0:.3g} req/s there ({res['levels']} levels; {res['reason']})"
               if res["best"] is not None else f"SLO search: {res['reason']} ({res['levels']} levels)")
        self.hooks.log(msg)
        self.hooks.result["slo_search"] = res
        self.monitor.search = res
        self.rec.event("slo_search", msg, payload=res)
        return res


class _relay:
    """Forwards the run-wide stop event into a per-level one (which the engine watch may also set)."""

    def __init__(self, src: threading.Event, dst: threading.Event):
        self._done = threading.Event()
        self._t = threading.Thread(target=self._run, args=(src, dst), daemon=True, name="stop-relay")
        self._t.start()

    def _run(self, src: threading.Event, dst: threading.Event) -> None:
        while not self._done.is_set():
            if src.wait(0.2):
                dst.set()
                return

    def close(self) -> None:
        self._done.set()
