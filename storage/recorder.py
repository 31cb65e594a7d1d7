"""The run worker's writes. One writer per run (the worker); the UI only reads (plus tags/notes edits).

Bulk rows (requests, telemetry, engine metrics) go in with executemany inserts in one transaction per batch:
~100k request rows for a 10,000-concurrency sweep must not cost a commit each.

Every write goes through `_tx`: a write that fails for an outside reason (disk full, read-only, lost server) is
rolled back (SQLite keeps the file consistent), remembered in `fault` and raised as storage.db.StorageFault with a
one-line message; `on_fault` (the sweep's stop) is called once, from whichever thread met it first.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable

from sqlalchemy import insert, select, update
from sqlalchemy.orm import sessionmaker

from sqlalchemy.exc import DBAPIError

from storage.db import StorageFault, open_db, storage_fault
from storage.models import (EngineInstance, EngineMetricSample, Event, Level, LevelStatus, Request, Run, RunStatus,
                            TelemetrySample, utcnow)

_REQUEST_COLS = {c.name for c in Request.__table__.columns} - {"id"}
_TELEMETRY_COLS = {c.name for c in TelemetrySample.__table__.columns} - {"id"}
_METRIC_COLS = {c.name for c in EngineMetricSample.__table__.columns} - {"id"}


def _pick(row, cols: set[str]) -> dict:
    """Columns from a dict or any object with those attributes (e.g. a slots dataclass)."""
    if isinstance(row, dict):
        return {k: row.get(k) for k in cols}
    return {k: getattr(row, k, None) for k in cols}


class Recorder:
    """Typed writes for one run. Every method opens a short session: safe from several threads."""

    def __init__(self, run_id: int, db: str | Path | None = None, factory: sessionmaker | None = None,
                 on_fault: Callable[[StorageFault], None] | None = None):
        self.run_id = run_id
        self._factory = factory or open_db(db)
        self.fault: StorageFault | None = None   # the first outside write failure, if any
        self.on_fault = on_fault
        self._fault_lock = threading.Lock()

    @contextmanager
    def _tx(self):
        """One write transaction; outside failures become StorageFault (see the module docstring)."""
        try:
            with self._factory.begin() as s:
                yield s
        except DBAPIError as e:
            fault = storage_fault(e, str(self._factory.kw["bind"].url.render_as_string(hide_password=False)))
            if fault is None:
                raise
            with self._fault_lock:
                first = self.fault is None
                if first:
                    self.fault = fault
            if first and self.on_fault is not None:
                self.on_fault(fault)
            raise fault from None

    # -- runs ---------------------------------------------------------------------------------------------
    @staticmethod
    def create_run(factory: sessionmaker, *, config: dict, name: str, engine_kind: str, model: str, gpu: str | None,
                   gpu_count: int, simulated: bool, tags: list[str], price_per_gpu_hour: float | None,
                   versions: dict, host: dict, target_agent: str | None = None) -> int:
        with factory.begin() as s:
            run = Run(config=config, name=name, engine_kind=engine_kind, model=model, gpu=gpu, gpu_count=gpu_count,
                      simulated=simulated, tags=tags, price_per_gpu_hour=price_per_gpu_hour, versions=versions,
                      host=host, status=RunStatus.queued, target_agent=target_agent)
            s.add(run)
            s.flush()
            return run.id

    def load_run(self) -> Run:
        with self._factory() as s:
            run = s.get(Run, self.run_id)
            if run is None:
                raise LookupError(f"run {self.run_id} not found")
            return run

    def update_run(self, **values: Any) -> None:
        with self._tx() as s:
            s.execute(update(Run).where(Run.id == self.run_id).values(**values))

    def set_status(self, status: RunStatus, error: str | None = None) -> None:
        values: dict[str, Any] = {"status": status}
        if status is RunStatus.starting:
            values["started_at"] = utcnow()
        if status.finished:
            values["finished_at"] = utcnow()
        if error is not None:
            values["error"] = error
        self.update_run(**values)

    def heartbeat(self) -> None:
        self.update_run(heartbeat_at=utcnow())

    def merge_versions(self, extra: dict) -> None:
        with self._tx() as s:
            run = s.get(Run, self.run_id)
            run.versions = {**(run.versions or {}), **extra}

    # -- engine instances -----------------------------------------------------------------------------------
    def add_instance(self, **values: Any) -> int:
        with self._tx() as s:
            inst = EngineInstance(run_id=self.run_id, **values)
            s.add(inst)
            s.flush()
            return inst.id

    def update_instance(self, instance_id: int, **values: Any) -> None:
        with self._tx() as s:
            s.execute(update(EngineInstance).where(EngineInstance.id == instance_id).values(**values))

    # -- levels ---------------------------------------------------------------------------------------------
    def start_level(self, idx: int, concurrency: int, n_requested: int | None, request_rate: float | None,
                    repeat: int = 0) -> int:
        with self._tx() as s:
            lvl = Level(run_id=self.run_id, idx=idx, concurrency=concurrency, n_requested=n_requested,
                        request_rate=request_rate, repeat=repeat, status=LevelStatus.running, started_at=utcnow(),
                        start_ns=time.time_ns())
            s.add(lvl)
            s.flush()
            return lvl.id

    def update_level(self, level_id: int, **values: Any) -> None:
        with self._tx() as s:
            s.execute(update(Level).where(Level.id == level_id).values(**values))

    def finish_level(self, level_id: int, status: LevelStatus, summary: dict | None, error: str | None = None,
                     telemetry: dict | None = None) -> None:
        values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "error": error}
        if summary:
            q = lambda key, stat: (summary.get(key) or {}).get(stat)  # noqa: E731
            values.update(
                summary=summary, n_sent=summary.get("n_sent", 0), n_ok=summary.get("n_ok", 0),
                n_err=summary.get("n_err", 0), duration_s=summary.get("duration_s"),
                output_tok_s=summary.get("output_tok_s"), total_tok_s=summary.get("total_tok_s"),
                req_s=summary.get("req_s"), goodput_req_s=summary.get("goodput_req_s"),
                ttft_p50_ms=q("ttft_ms", "p50"), ttft_p99_ms=q("ttft_ms", "p99"), tpot_p50_ms=q("tpot_ms", "p50"),
                e2e_p50_ms=q("e2e_ms", "p50"), client_cpu_pct=summary.get("client_cpu_pct"),
                client_bound=bool(summary.get("client_bound")), start_ns=summary.get("start_ns"),
                end_ns=summary.get("end_ns"))
        if telemetry is not None:
            values["telemetry"] = telemetry
        with self._tx() as s:
            s.execute(update(Level).where(Level.id == level_id).values(**values))
            if summary and status is LevelStatus.completed:
                run = s.get(Run, self.run_id)
                tok = summary.get("output_tok_s")
                good = summary.get("goodput_req_s")
                # Client-bound levels measured the client, not the server: keep them out of the headline numbers.
                if tok is not None and not summary.get("client_bound"):
                    run.peak_output_tok_s = max(run.peak_output_tok_s or 0.0, tok)
                if good is not None and not summary.get("client_bound"):
                    run.best_goodput_req_s = max(run.best_goodput_req_s or 0.0, good)

    # -- bulk rows ------------------------------------------------------------------------------------------
    def insert_requests(self, level_id: int, rows: Iterable[dict]) -> int:
        batch = [{**_pick(r, _REQUEST_COLS), "run_id": self.run_id, "level_id": level_id} for r in rows]
        if batch:
            with self._tx() as s:
                s.execute(insert(Request), batch)
        return len(batch)

    def insert_telemetry(self, rows: Iterable[dict]) -> int:
        batch = [{**_pick(r, _TELEMETRY_COLS), "run_id": self.run_id} for r in rows]
        if batch:
            with self._tx() as s:
                s.execute(insert(TelemetrySample), batch)
        return len(batch)

    def insert_engine_metrics(self, rows: Iterable[dict], instance_id: int | None) -> int:
        batch = [{**_pick(r, _METRIC_COLS), "run_id": self.run_id, "instance_id": instance_id} for r in rows]
        if batch:
            with self._tx() as s:
                s.execute(insert(EngineMetricSample), batch)
        return len(batch)

    def event(self, kind: str, message: str = "", *, level_id: int | None = None, payload: dict | None = None) -> None:
        with self._tx() as s:
            s.add(Event(run_id=self.run_id, t_ns=time.time_ns(), kind=kind, message=message, level_id=level_id,
                        payload=payload))


def active_runs(factory: sessionmaker) -> list[Run]:
    """Runs that claim to be alive (queued included: a worker that died while starting)."""
    live = (RunStatus.queued, RunStatus.starting, RunStatus.running)
    with factory() as s:
        return list(s.scalars(select(Run).where(Run.status.in_(live))).all())


def stale_runs(factory: sessionmaker, older_than: datetime) -> list[Run]:
    """Runs that claim to be alive but whose worker stopped beating before `older_than`."""
    return [r for r in active_runs(factory) if (r.heartbeat_at or r.started_at or r.created_at) < older_than]
