"""The reads the dashboard needs (plus the few writes a person makes there: name, tags, notes, delete).

Everything returns plain data (dataclasses, dicts, column dicts that pandas.DataFrame takes as is), never ORM
objects, so nothing outlives its session and the UI cannot lazy-load by accident. Bulk series (requests,
telemetry, engine metrics) are fetched as columns with an `after_id` cursor: the Live page polls once a second
and asks only for rows it has not seen, so a long sweep does not cost a full re-read per tick.

The series math at the bottom (tokens/s over time, latency percentiles over time) is pure and tested.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import String, case, cast, delete, func, or_, select, update

from storage.db import get_engine, open_db
from storage.models import (EngineInstance, EngineMetricSample, Event, Level, Request, Run, RunChart, RunStatus,
                            TelemetrySample)

Db = str | Path | None
ACTIVE = (RunStatus.queued, RunStatus.starting, RunStatus.running)


# --------------------------------------------------------------------------------------------------- runs

def projection_label(projection: dict | None, loud: bool = False) -> str | None:
    """'projected from #12' for a projected run (bench/project.py), 'projected from a run of another history' when
    its source is not in this history (an imported projection); None for any other run. `loud`: 'PROJECTED from'."""
    if not projection:
        return None
    src = projection.get("from_run")
    what = "from #" + str(src) if src is not None else "from a run of another history"
    return ("PROJECTED " if loud else "projected ") + what

@dataclass(frozen=True)
class RunRow:
    id: int
    name: str
    status: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    engine_kind: str
    model: str
    gpu: str | None
    gpu_count: int
    simulated: bool
    tags: list[str]
    notes: str
    peak_output_tok_s: float | None
    best_goodput_req_s: float | None
    price_per_gpu_hour: float | None
    error: str | None
    target_agent: str | None = None   # the remote agent the run is addressed to (bench/agent.py)
    agent: str | None = None          # the agent that took it
    projection: dict | None = None    # a projected run (bench/project.py): where it came from, fit, expected error

    @property
    def active(self) -> bool:
        return self.status in {s.value for s in ACTIVE}

    @property
    def projected_from(self) -> int | None:
        return (self.projection or {}).get("from_run")

    @property
    def projection_label(self) -> str | None:
        return projection_label(self.projection, loud=True)

    @property
    def label(self) -> str:
        """Short human label: '#12 name (SIMULATED)', '#13 name (PROJECTED from #12, SIMULATED)'. Not escaped:
        escape where it is rendered as markup."""
        if self.projection:
            return f"#{self.id} {self.name or self.model} ({self.projection_label}, SIMULATED)"
        sim = " (SIMULATED)" if self.simulated else ""
        return f"#{self.id} {self.name or self.model}{sim}"


@dataclass(frozen=True)
class LevelRow:
    id: int
    idx: int
    concurrency: int
    request_rate: float | None
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    start_ns: int | None
    end_ns: int | None
    n_requested: int | None
    n_sent: int
    n_ok: int
    n_err: int
    duration_s: float | None
    output_tok_s: float | None
    total_tok_s: float | None
    req_s: float | None
    goodput_req_s: float | None
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    tpot_p50_ms: float | None
    e2e_p50_ms: float | None
    client_cpu_pct: float | None
    client_bound: bool
    summary: dict
    telemetry: dict
    error: str | None
    repeat: int = 0          # 0-based repeat of its (concurrency, rate) (--repeat N)


@dataclass(frozen=True)
class InstanceRow:
    id: int
    kind: str
    model: str
    argv: list
    version: str | None
    base_url: str | None
    pid: int | None
    state: str
    phase: str | None
    log_tail: str
    gpus: list
    launched_at: datetime | None
    ready_at: datetime | None
    stopped_at: datetime | None
    startup_s: float | None
    exit_code: int | None
    error: str | None
    name: str | None = None        # its name in a deployment of several instances
    weight: float | None = None    # its share of the traffic


@dataclass(frozen=True)
class RunDetail:
    run: RunRow
    config: dict
    versions: dict
    host: dict
    worker_pid: int | None
    heartbeat_at: datetime | None
    levels: list[LevelRow] = field(default_factory=list)
    instances: list[InstanceRow] = field(default_factory=list)


_RUN_FIELDS = [f for f in RunRow.__dataclass_fields__]
_LEVEL_FIELDS = [f for f in LevelRow.__dataclass_fields__]
_INSTANCE_FIELDS = [f for f in InstanceRow.__dataclass_fields__]


def _enum_value(v: Any) -> Any:
    return v.value if hasattr(v, "value") else v


def _run_row(r: Run) -> RunRow:
    vals = {f: _enum_value(getattr(r, f)) for f in _RUN_FIELDS}
    vals["tags"] = list(vals["tags"] or [])
    vals["notes"] = vals["notes"] or ""
    vals["name"] = vals["name"] or ""
    return RunRow(**vals)


def _level_row(lv: Level) -> LevelRow:
    vals = {f: _enum_value(getattr(lv, f, None)) for f in _LEVEL_FIELDS}
    vals["repeat"] = vals["repeat"] or 0  # a schema from before levels.repeat: every level is the first
    vals["summary"] = dict(vals["summary"] or {})
    vals["telemetry"] = dict(vals["telemetry"] or {})
    return LevelRow(**vals)


def _instance_row(i: EngineInstance) -> InstanceRow:
    vals = {f: getattr(i, f) for f in _INSTANCE_FIELDS}
    vals["log_tail"] = vals["log_tail"] or ""
    return InstanceRow(**vals)


def list_runs(db: Db = None, *, search: str | None = None, statuses: Iterable[str] | None = None,
              engines: Iterable[str] | None = None, models: Iterable[str] | None = None,
              gpus: Iterable[str] | None = None, tags: Iterable[str] | None = None,
              simulated: bool | None = None, since: datetime | None = None, limit: int = 1000) -> list[RunRow]:
    """History, newest first. `search` matches name, model, GPU, engine, notes and tags (case-insensitive);
    `tags` keeps runs carrying every listed tag. Filters left as None do not filter."""
    q = select(Run).order_by(Run.created_at.desc(), Run.id.desc())
    if search:
        like = f"%{search.strip()}%"
        conds = [Run.name.ilike(like), Run.model.ilike(like), Run.gpu.ilike(like), Run.engine_kind.ilike(like),
                 Run.notes.ilike(like), cast(Run.tags, String).ilike(like)]
        if search.strip().lstrip("#").isdigit():
            conds.append(Run.id == int(search.strip().lstrip("#")))
        q = q.where(or_(*conds))
    if statuses:
        q = q.where(Run.status.in_([RunStatus(s) for s in statuses]))
    if engines:
        q = q.where(Run.engine_kind.in_(list(engines)))
    if models:
        q = q.where(Run.model.in_(list(models)))
    if gpus:
        q = q.where(Run.gpu.in_(list(gpus)))
    if simulated is not None:
        q = q.where(Run.simulated.is_(simulated))
    if since is not None:
        q = q.where(Run.created_at >= since)
    want_tags = [t for t in (tags or []) if t]
    with open_db(db)() as s:
        rows = [_run_row(r) for r in s.scalars(q.limit(None if want_tags else limit))]
    if want_tags:  # JSON arrays: filter in Python, portable across SQLite and other databases
        rows = [r for r in rows if set(want_tags) <= set(r.tags)][:limit]
    return rows


def run_facets(db: Db = None) -> dict[str, list[str]]:
    """Distinct values for the history filters."""
    with open_db(db)() as s:
        engines = sorted(x for x in s.scalars(select(Run.engine_kind).distinct()) if x)
        models = sorted(x for x in s.scalars(select(Run.model).distinct()) if x)
        gpus = sorted(x for x in s.scalars(select(Run.gpu).distinct()) if x)
        tags = sorted({t for ts in s.scalars(select(Run.tags)) for t in (ts or [])})
    return {"engines": engines, "models": models, "gpus": gpus, "tags": tags,
            "statuses": [s.value for s in RunStatus]}


def get_run(run_id: int, db: Db = None) -> RunDetail | None:
    with open_db(db)() as s:
        r = s.get(Run, run_id)
        if r is None:
            return None
        levels = s.scalars(select(Level).where(Level.run_id == run_id).order_by(Level.idx)).all()
        insts = s.scalars(select(EngineInstance).where(EngineInstance.run_id == run_id)
                          .order_by(EngineInstance.id)).all()
        return RunDetail(run=_run_row(r), config=dict(r.config or {}), versions=dict(r.versions or {}),
                         host=dict(r.host or {}), worker_pid=r.worker_pid, heartbeat_at=r.heartbeat_at,
                         levels=[_level_row(x) for x in levels], instances=[_instance_row(i) for i in insts])


def get_runs(run_ids: Sequence[int], db: Db = None) -> list[RunDetail]:
    """Several runs in the order asked; missing ids are skipped."""
    out = [get_run(i, db) for i in run_ids]
    return [d for d in out if d is not None]


def latest_run_id(db: Db = None, *, active_only: bool = False) -> int | None:
    q = select(Run.id).order_by(Run.created_at.desc(), Run.id.desc()).limit(1)
    if active_only:
        q = q.where(Run.status.in_(ACTIVE))
    with open_db(db)() as s:
        return s.scalar(q)


def update_run_meta(run_id: int, db: Db = None, *, name: str | None = None, tags: Iterable[str] | None = None,
                    notes: str | None = None) -> bool:
    """Edit what a person owns on a run. Tags are stripped, de-duplicated, order kept. False if no such run."""
    values: dict[str, Any] = {}
    if name is not None:
        values["name"] = name.strip()[:200]
    if tags is not None:
        clean: list[str] = []
        for t in tags:
            t = str(t).strip()
            if t and t not in clean:
                clean.append(t[:60])
        values["tags"] = clean
    if notes is not None:
        values["notes"] = notes
    if not values:
        return get_run(run_id, db) is not None
    with open_db(db).begin() as s:
        return s.execute(update(Run).where(Run.id == run_id).values(**values)).rowcount > 0


class RunActiveError(RuntimeError):
    pass


def delete_run(run_id: int, db: Db = None, *, force: bool = False) -> bool:
    """Delete a run and everything under it. An active run is refused (cancel it first) unless force=True.
    Returns False when no such run."""
    factory = open_db(db)
    with factory.begin() as s:
        r = s.get(Run, run_id)
        if r is None:
            return False
        if r.status in ACTIVE and not force:
            raise RunActiveError(f"run {run_id} is {r.status.value}: cancel it before deleting")
        # Bulk children first with set-based deletes (fast for 100k rows, and correct even if a
        # connection was opened without PRAGMA foreign_keys), then the ORM cascade for the rest.
        for model in (Request, TelemetrySample, EngineMetricSample, Event, RunChart):
            s.execute(delete(model).where(model.run_id == run_id))
        s.delete(r)
    return True


# ------------------------------------------------------------------------------------------------ series
def _columns(rows: Sequence[Sequence[Any]], names: Sequence[str]) -> dict[str, list]:
    if not rows:
        return {n: [] for n in names}
    return dict(zip(names, map(list, zip(*rows))))


def _fetch_columns(db: Db, table, names: Sequence[str], run_id: int, after_id: int,
                   limit: int | None = None) -> dict[str, list]:
    """Columns of one run's rows of `table` with id > after_id, ids ascending.

    On SQLite this goes straight to the DBAPI cursor: for 100k request rows SQLAlchemy's per-row result processing
    costs several times the query itself (1.8 s vs 0.3 s measured), and the Live page reads these every second.
    Booleans then arrive as 0/1. Any other database goes through SQLAlchemy Core."""
    eng = get_engine(db)
    if eng.dialect.name == "sqlite":
        # Table and column names are module constants, never user input; values are bound parameters.
        sql = (f"SELECT {', '.join(names)} FROM {table.__tablename__} WHERE run_id = ? AND id > ? ORDER BY id"
               + (f" LIMIT {int(limit)}" if limit else ""))
        raw = eng.raw_connection()
        try:
            cur = raw.cursor()
            cur.execute(sql, (run_id, after_id))
            rows = cur.fetchall()
            cur.close()
        finally:
            raw.close()
        return _columns(rows, names)
    q = (select(*[getattr(table, n) for n in names]).where(table.run_id == run_id, table.id > after_id)
         .order_by(table.id))
    if limit:
        q = q.limit(limit)
    with open_db(db)() as s:
        return _columns([tuple(r) for r in s.execute(q)], names)


_REQ_COLS = ("id", "level_id", "send_ns", "ttft_ms", "e2e_ms", "itl_mean_ms", "output_tokens", "ok", "warmup")


def request_points(run_id: int, db: Db = None, *, after_id: int = 0, limit: int | None = None) -> dict[str, list]:
    """Per-request columns (ids ascending) for rows with id > after_id. Completion time = send_ns + e2e_ms*1e6.
    `ok` / `warmup` are truthy ints or bools depending on the database."""
    return _fetch_columns(db, Request, _REQ_COLS, run_id, after_id, limit)


_TEL_COLS = ("id", "t_ns", "gpu_index", "simulated", "util_gpu", "util_mem", "mem_used_mb", "mem_total_mb", "power_w",
             "power_avg_w", "energy_j", "temp_gpu_c", "temp_mem_c", "sm_clock_mhz", "mem_clock_mhz", "throttle_reasons", "pstate")


def telemetry_series(run_id: int, db: Db = None, *, after_id: int = 0) -> dict[str, list]:
    return _fetch_columns(db, TelemetrySample, _TEL_COLS, run_id, after_id)


_EM_COLS = ("id", "t_ns", "instance_id", "running", "waiting", "kv_cache_usage", "prompt_tokens_total",
            "generation_tokens_total", "preemptions_total", "requests_success_total")


def engine_metric_series(run_id: int, db: Db = None, *, after_id: int = 0) -> dict[str, list]:
    return _fetch_columns(db, EngineMetricSample, _EM_COLS, run_id, after_id)


@dataclass(frozen=True)
class EventRow:
    id: int
    t_ns: int
    kind: str
    message: str
    level_id: int | None
    payload: dict | None


def events(run_id: int, db: Db = None, *, kinds: Iterable[str] | None = None, limit: int = 200) -> list[EventRow]:
    """The most recent `limit` events, oldest first."""
    q = select(Event).where(Event.run_id == run_id).order_by(Event.id.desc()).limit(limit)
    if kinds:
        q = q.where(Event.kind.in_(list(kinds)))
    with open_db(db)() as s:
        rows = [EventRow(e.id, e.t_ns, e.kind, e.message or "", e.level_id, e.payload) for e in s.scalars(q)]
    return rows[::-1]


def request_aggregates(run_id: int, db: Db = None) -> list[dict]:
    """Per level, straight from the request rows (warm-up excluded): counts, tokens, time span, mean TTFT.
    The Live page uses this for a level still in progress, whose summary is not written yet."""
    done = Request.send_ns + func.coalesce(Request.e2e_ms, 0.0) * 1e6
    q = (select(Request.level_id, func.count(), func.sum(case((Request.ok.is_(True), 1), else_=0)),
                func.coalesce(func.sum(Request.input_tokens), 0), func.coalesce(func.sum(Request.output_tokens), 0),
                func.min(Request.send_ns), func.max(done), func.avg(Request.ttft_ms))
         .where(Request.run_id == run_id, Request.warmup.is_(False)).group_by(Request.level_id))
    with open_db(db)() as s:
        rows = s.execute(q).all()
    out = []
    for level_id, n, n_ok, tin, tout, first_ns, last_ns, ttft in rows:
        n_ok = int(n_ok or 0)
        out.append({"level_id": level_id, "n": int(n), "n_ok": n_ok, "n_err": int(n) - n_ok,
                    "input_tokens": int(tin), "output_tokens": int(tout), "first_send_ns": first_ns,
                    "last_done_ns": int(last_ns) if last_ns is not None else None, "ttft_mean_ms": ttft})
    return out


def error_breakdown(run_id: int, db: Db = None, *, limit: int = 20) -> list[dict]:
    """Failed requests grouped by level, HTTP status and message (first 200 chars), most frequent first."""
    msg = func.substr(func.coalesce(Request.error, ""), 1, 200)
    q = (select(Request.level_id, Request.status_code, msg, func.count().label("n"))
         .where(Request.run_id == run_id, Request.ok.is_(False))
         .group_by(Request.level_id, Request.status_code, msg).order_by(func.count().desc()).limit(limit))
    with open_db(db)() as s:
        return [{"level_id": l, "status_code": c, "error": m, "count": n} for l, c, m, n in s.execute(q).all()]


def recent_verdicts(db: Db = None, *, limit: int = 10) -> list[dict]:
    """The last finished runs' GPU health verdicts, newest first. The run's `verdict` event (written by the
    worker from telemetry.health) wins; older runs fall back to verdicts inside Level.telemetry."""
    with open_db(db)() as s:
        runs = s.scalars(select(Run).where(Run.status.not_in(ACTIVE)).order_by(Run.created_at.desc(), Run.id.desc())
                         .limit(limit)).all()
        out = []
        for r in runs:
            ev = s.scalars(select(Event).where(Event.run_id == r.id, Event.kind == "verdict")
                           .order_by(Event.id.desc()).limit(1)).first()
            if ev is not None:
                verdicts = [_verdict_text(ev.payload) or ev.message]
            else:
                lv = s.scalars(select(Level.telemetry).where(Level.run_id == r.id).order_by(Level.idx)).all()
                verdicts = [v for v in (_verdict_text((t or {}).get("verdict")) for t in lv) if v]
            out.append({"run_id": r.id, "name": r.name or "", "gpu": r.gpu, "gpu_count": r.gpu_count,
                        "simulated": bool(r.simulated), "status": r.status.value, "finished_at": r.finished_at,
                        "verdict": _worst(verdicts), "details": verdicts})
    return out


def blitz_results(db: Db = None, *, limit: int = 2000) -> list[dict]:
    """Every Blitz run's result (its newest `blitz` event, written by bench.blitz_run), newest run first, with the
    run's identity beside it: {"run_id", "name", "created_at", "status", "engine_kind", "gpu", "gpu_count",
    "simulated", "result"}."""
    q = (select(Event.run_id, Event.payload, Run.name, Run.created_at, Run.status, Run.engine_kind, Run.gpu,
                Run.gpu_count, Run.simulated)
         .join(Run, Run.id == Event.run_id).where(Event.kind == "blitz").order_by(Event.id))
    latest: dict[int, dict] = {}
    with open_db(db)() as s:
        for rid, payload, name, created, status, kind, gpu, count, sim in s.execute(q).all():
            latest[rid] = {"run_id": rid, "name": name or "", "created_at": created, "status": _enum_value(status),
                           "engine_kind": kind, "gpu": gpu, "gpu_count": count, "simulated": bool(sim),
                           "result": payload or {}}
    return sorted(latest.values(), key=lambda r: r["run_id"], reverse=True)[:limit]


def _verdict_text(v: Any) -> str | None:
    """Verdicts may be a string ("ok", "throttled: power cap") or a dict with a status/verdict key."""
    if v is None:
        return None
    if isinstance(v, dict):
        head = v.get("status") or v.get("verdict") or v.get("level") or ""
        why = v.get("reasons") or v.get("reason") or v.get("message") or ""
        if isinstance(why, (list, tuple)):
            why = "; ".join(map(str, why))
        return f"{head}: {why}" if why else str(head)
    return str(v)


_SEVERITY = ("fail", "error", "bad", "throttl", "warn", "degrad")


def _worst(verdicts: list[str]) -> str | None:
    if not verdicts:
        return None
    for word in _SEVERITY:
        for v in verdicts:
            if word in v.lower():
                return v
    return verdicts[-1]


def latest_gpu_samples(db: Db = None, *, run_id: int | None = None) -> list[dict]:
    """The newest telemetry sample of each GPU in `run_id` (default: the most recent run that has any)."""
    with open_db(db)() as s:
        if run_id is None:
            run_id = s.scalar(select(TelemetrySample.run_id).order_by(TelemetrySample.id.desc()).limit(1))
            if run_id is None:
                return []
        newest = (select(TelemetrySample.gpu_index, func.max(TelemetrySample.id).label("mid"))
                  .where(TelemetrySample.run_id == run_id).group_by(TelemetrySample.gpu_index).subquery())
        rows = s.scalars(select(TelemetrySample).join(newest, TelemetrySample.id == newest.c.mid)
                         .order_by(TelemetrySample.gpu_index)).all()
        return [{c: getattr(t, c) for c in _TEL_COLS} | {"run_id": run_id} for t in rows]


# ------------------------------------------------------------------------------------- pure series math
def _f64(values) -> np.ndarray:
    """Floats with None -> NaN, from a list or an array."""
    return np.asarray(values, dtype=np.float64)


def _flags(values, n: int) -> np.ndarray:
    return np.zeros(n, dtype=bool) if values is None else np.asarray(values, dtype=np.float64) > 0


def completion_ns(points: dict) -> np.ndarray:
    """Completion time of each request: send + E2E (failed requests without E2E count at their send time)."""
    return _f64(points["send_ns"]) + np.nan_to_num(_f64(points["e2e_ms"])) * 1e6


def throughput_series(points: dict, *, bucket_s: float = 1.0, t0_ns: int | None = None,
                      until_ns: int | None = None) -> dict[str, list]:
    """Output tokens/s over time from completed requests, `bucket_s` buckets starting at t0_ns.

    Each successful request's output tokens are spread evenly over its decode window [send + TTFT, send + E2E]
    (that is when the tokens streamed), so the curve shows the real rate instead of spikes at completions.
    The integral over the run equals the sum of output tokens exactly. Requests still in flight are not in the
    database yet, so the last few seconds of a live run read low.
    Returns {"t_s": bucket starts (s since t0), "output_tok_s": [...], "errors": failed requests per bucket}.
    """
    n = len(points.get("send_ns", []))
    if n == 0:
        return {"t_s": [], "output_tok_s": [], "errors": []}
    send = _f64(points["send_ns"])
    done = completion_ns(points)
    ok = _flags(points["ok"], n)
    warm = _flags(points.get("warmup"), n)
    ttft = np.nan_to_num(_f64(points["ttft_ms"]))
    tok = np.nan_to_num(_f64(points["output_tokens"]))
    t0 = float(t0_ns) if t0_ns is not None else float(send.min())
    end = float(until_ns) if until_ns is not None else float(done.max())
    nb = max(1, int(math.ceil((end - t0) / (bucket_s * 1e9))))
    edges = t0 + np.arange(nb + 1) * bucket_s * 1e9

    use = ok & ~warm & (tok > 0)
    a = send[use] + ttft[use] * 1e6
    b = done[use]
    t = tok[use]
    # Cumulative tokens F(x) = sum t_i * clip((x - a_i) / (b_i - a_i), 0, 1): piecewise linear, so exact at the
    # edges through its breakpoints. Zero-length windows (a single chunk) put all tokens at b_i.
    inst = b <= a
    span = np.where(inst, 1.0, b - a)
    rate = np.where(inst, 0.0, t / span)
    bp = np.concatenate([a[~inst], b[~inst]])
    dslope = np.concatenate([rate[~inst], -rate[~inst]])
    order = np.argsort(bp, kind="stable")
    bp, dslope = bp[order], dslope[order]
    if bp.size:
        slope_after = np.cumsum(dslope)
        f_at_bp = np.concatenate([[0.0], np.cumsum(slope_after[:-1] * np.diff(bp))])
        cum = np.interp(edges, bp, f_at_bp, left=0.0, right=f_at_bp[-1])
    else:
        cum = np.zeros_like(edges)
    if inst.any():  # instant requests: steps at b_i
        order = np.argsort(b[inst])
        bi, ti = b[inst][order], t[inst][order]
        cum = cum + np.concatenate([[0.0], np.cumsum(ti)])[np.searchsorted(bi, edges, side="right")]
    tok_s = np.diff(cum) / bucket_s

    err_t = done[~ok & ~warm]
    errs = np.histogram(err_t, bins=edges)[0] if err_t.size else np.zeros(nb, dtype=int)
    return {"t_s": ((edges[:-1] - t0) / 1e9).tolist(), "output_tok_s": tok_s.tolist(), "errors": errs.tolist()}


def group_percentiles(groups: np.ndarray, values: np.ndarray, percentiles: Sequence[float]
                      ) -> tuple[np.ndarray, np.ndarray, dict[float, np.ndarray]]:
    """Percentiles of `values` within each group, vectorised (same linear interpolation as numpy.percentile).
    NaN values are ignored. Returns (group ids, counts, {p: per-group percentile})."""
    keep = ~np.isnan(values)
    g, v = groups[keep], values[keep]
    if v.size == 0:
        return np.array([], dtype=groups.dtype), np.array([], dtype=int), {p: np.array([]) for p in percentiles}
    order = np.lexsort((v, g))
    g, v = g[order], v[order]
    ids, starts, counts = np.unique(g, return_index=True, return_counts=True)
    out = {}
    for p in percentiles:
        pos = starts + (counts - 1) * (p / 100.0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, starts + counts - 1)
        out[p] = v[lo] + (v[hi] - v[lo]) * (pos - lo)
    return ids, counts, out


def latency_series(points: dict, *, bucket_s: float = 5.0, t0_ns: int | None = None,
                   percentiles: Sequence[float] = (50, 99)) -> dict[str, list]:
    """TTFT and per-request mean ITL percentiles over time, by completion time (successful requests only).
    Returns {"t_s": [...], "n": [...], "ttft_p50": [...], "ttft_p99": [...], "itl_p50": [...], ...}; buckets
    without successful requests are skipped so lines connect across gaps; None where a metric has no value."""
    n = len(points.get("send_ns", []))
    keys = ["t_s", "n"] + [f"{m}_p{p:g}" for m in ("ttft", "itl") for p in percentiles]
    out: dict[str, list] = {k: [] for k in keys}
    if n == 0:
        return out
    send = _f64(points["send_ns"])
    ok = _flags(points["ok"], n) & ~_flags(points.get("warmup"), n)
    if not ok.any():
        return out
    t0 = float(t0_ns) if t0_ns is not None else float(send.min())
    bucket = np.floor((completion_ns(points) - t0) / (bucket_s * 1e9)).astype(np.int64)[ok]
    ids, counts = np.unique(bucket, return_counts=True)
    out["t_s"] = (ids * bucket_s).astype(float).tolist()
    out["n"] = counts.tolist()
    for m, col in (("ttft", "ttft_ms"), ("itl", "itl_mean_ms")):
        g_ids, _, pct = group_percentiles(bucket, _f64(points[col])[ok], percentiles)
        where = np.searchsorted(ids, g_ids)
        for p in percentiles:
            vals: list = [None] * len(ids)
            for i, v in zip(where.tolist(), pct[p].tolist()):
                vals[i] = v
            out[f"{m}_p{p:g}"] = vals
    return out


def counter_rate(t_ns: Sequence[int], values: Sequence[float | None], *, min_dt_s: float = 0.5) -> dict[str, list]:
    """Per-second rate of a monotonic counter (e.g. generation_tokens_total); resets (value drops) are skipped.
    Returns {"t_ns": [...], "rate": [...]}, each rate placed at the middle of the interval it was measured over
    (so it lines up with bucketed client-side series instead of lagging half an interval)."""
    out: dict[str, list] = {"t_ns": [], "rate": []}
    prev_t = prev_v = None
    for t, v in zip(t_ns, values):
        if v is None or v != v:  # NULL arrives as None or NaN
            continue
        t, v = int(t), float(v)
        if prev_t is None:
            prev_t, prev_v = t, v
            continue
        dt = (t - prev_t) / 1e9
        if dt < min_dt_s:  # too close for a stable rate: keep the older sample as the base
            continue
        if v >= prev_v:
            out["t_ns"].append((prev_t + t) // 2)
            out["rate"].append((v - prev_v) / dt)
        prev_t, prev_v = t, v
    return out


# ------------------------------------------------------------------------------------ shaping for the pages
def _pct(summary: dict, metric: str, stat: str) -> float | None:
    v = (summary.get(metric) or {}).get(stat) if isinstance(summary.get(metric), dict) else None
    return float(v) if v is not None else None


def _per_user(tok: float | None, lv, summary: dict) -> float | None:
    """Output tok/s one user sees. Closed loop: the level's throughput over its concurrency (every user always has
    a request in flight). Request-rate levels: concurrency is only a cap, so divide by the mean number of requests
    actually in flight, req/s x mean E2E (Little's law)."""
    if not tok:
        return None
    users = float(lv.concurrency)
    if lv.request_rate is not None:
        e2e_ms = _pct(summary, "e2e_ms", "mean")
        if lv.req_s and e2e_ms:
            users = lv.req_s * e2e_ms / 1000.0
    return tok / users if users > 0 else None


def roofline_share(summary: dict) -> float | None:
    """A level's share of its GPU's roofline; None when there is none, or when the level served several models (one
    model's roofline against the box's tok/s means nothing; levels stored before the sweep stopped computing it
    for such levels still carry one)."""
    insts = summary.get("instances") or {}
    if len({(i or {}).get("model") for i in insts.values()}) > 1:
        return None
    roof = summary.get("roofline")
    share = roof.get("share") if isinstance(roof, dict) else None
    return float(share) if share is not None else None


def _share_pct(summary: dict) -> float | None:
    share = roofline_share(summary)
    return 100.0 * share if share is not None else None


def level_table(detail: RunDetail) -> list[dict]:
    """One flat row per level for tables, charts against concurrency and CSV: summary percentiles, telemetry,
    per-user and per-GPU throughput. Columns stay present (None) for levels still running."""
    gpus = max(1, detail.run.gpu_count or 1)
    out = []
    for lv in detail.levels:
        s, t = lv.summary, lv.telemetry
        tok = lv.output_tok_s if lv.output_tok_s is not None else s.get("output_tok_s")
        steady = s.get("steady") or {}
        out.append({
            "level": lv.idx + 1, "concurrency": lv.concurrency, "request_rate": lv.request_rate,
            "repeat": lv.repeat + 1, "status": lv.status,
            "n_requested": lv.n_requested, "n_sent": lv.n_sent, "n_ok": lv.n_ok, "n_err": lv.n_err,
            "duration_s": lv.duration_s, "output_tok_s": tok, "total_tok_s": lv.total_tok_s, "req_s": lv.req_s,
            "goodput_req_s": lv.goodput_req_s,
            "ttft_p50_ms": _pct(s, "ttft_ms", "p50") or lv.ttft_p50_ms, "ttft_p90_ms": _pct(s, "ttft_ms", "p90"),
            "ttft_p99_ms": _pct(s, "ttft_ms", "p99") or lv.ttft_p99_ms,
            "tpot_p50_ms": _pct(s, "tpot_ms", "p50") or lv.tpot_p50_ms, "tpot_p99_ms": _pct(s, "tpot_ms", "p99"),
            "itl_p50_ms": _pct(s, "itl_ms", "p50"), "itl_p99_ms": _pct(s, "itl_ms", "p99"),
            "e2e_p50_ms": _pct(s, "e2e_ms", "p50") or lv.e2e_p50_ms, "e2e_p99_ms": _pct(s, "e2e_ms", "p99"),
            # steady state (bench/steady.py), beside the whole-level figures; None where a level has no window
            "steady_s": steady.get("duration_s"), "steady_output_tok_s": steady.get("output_tok_s"),
            "steady_req_s": steady.get("req_s"), "steady_ttft_p50_ms": _pct(steady, "ttft_ms", "p50"),
            "steady_tpot_p50_ms": _pct(steady, "tpot_ms", "p50"), "steady_e2e_p50_ms": _pct(steady, "e2e_ms", "p50"),
            # share of the GPU's roofline (bench/roofline.py, computed when the level finished)
            "roofline_pct": _share_pct(s),
            "tok_s_per_user": _per_user(tok, lv, s),
            "tok_s_per_gpu": tok / gpus if tok else None,
            "client_cpu_pct": lv.client_cpu_pct, "client_bound": lv.client_bound,
            # the engine's busiest process, % of one core (bench/server_cpu.py; only engines Melt launched)
            "server_cpu_pct": ((s.get("server_cpu") or {}).get("busiest") or {}).get("pct"),
            "server_cpu_proc": ((s.get("server_cpu") or {}).get("busiest") or {}).get("name"),
            "frontend_bound": bool((s.get("server_cpu") or {}).get("frontend_bound")),
            "avg_power_w": t.get("avg_power_w"), "energy_j": t.get("energy_j"),
            "j_per_output_token": t.get("joules_per_output_token"), "avg_util_gpu": t.get("avg_util_gpu"),
            "peak_temp_gpu_c": t.get("peak_temp_gpu_c"), "throttled_pct": t.get("throttled_pct"),
            "gpu_verdict": _verdict_text(t.get("verdict")),
            "error": lv.error,
        })
    return out


@dataclass(frozen=True)
class LevelProgress:
    idx: int
    concurrency: int
    status: str            # pending | running | completed | failed | cancelled | not run (the run ended first)
    done: int              # finished requests (ok + failed)
    total: int | None      # planned requests (None = duration-bound)
    fraction: float        # 0..1
    elapsed_s: float | None
    eta_s: float | None


@dataclass(frozen=True)
class SweepProgress:
    levels: list[LevelProgress]
    fraction: float
    elapsed_s: float | None
    eta_s: float | None    # None = not enough known yet


def sweep_progress(detail: RunDetail, planned: Sequence[tuple[int, int | None]], duration_s: float | None,
                   now: datetime) -> SweepProgress:
    """Progress per planned level (concurrency, requests or None) and for the sweep, with an ETA.

    A running level's ETA extrapolates its own pace; levels not started yet are estimated at the request rate
    of the latest measured level (request-bound) or their fixed duration. Rates usually rise with concurrency,
    so the ETA errs long.

    Only a completed level counts as done: a cancelled or failed level shows the share of its requests that
    finished (0 requests: an empty bar), and levels a finished run never reached stay at 0 ("not run"). Time is
    counted to the run's end, not to `now`, once the run has finished."""
    by_idx = {lv.idx: lv for lv in detail.levels}
    run_over = detail.run.status not in ("queued", "starting", "running")
    rows: list[LevelProgress] = []
    last_rate = None
    for lv in detail.levels:
        if lv.req_s:
            last_rate = lv.req_s
    for idx, (conc, n_req) in enumerate(planned):
        lv = by_idx.get(idx)
        if lv is None:
            eta = duration_s if n_req is None else (n_req / last_rate if last_rate else None)
            rows.append(LevelProgress(idx, conc, "not run" if run_over else "pending", 0, n_req, 0.0, None,
                                      None if run_over else eta))
            continue
        done = lv.n_ok + lv.n_err
        total = lv.n_requested if lv.n_requested is not None else n_req
        elapsed = lv.duration_s
        if lv.started_at is not None and (lv.status == "running" or elapsed is None):
            end = lv.finished_at or (detail.run.finished_at if run_over else None) or now
            elapsed = max(0.0, (end - lv.started_at).total_seconds())
        if lv.status == "completed":
            frac = 1.0
        elif total:
            frac = min(1.0, done / total)
        elif duration_s:
            frac = min(1.0, (elapsed or 0.0) / duration_s)
        else:
            frac = 0.0
        running = lv.status == "running" and not run_over
        eta = 0.0 if not running else (
            (elapsed * (1 - frac) / frac) if frac > 0 and elapsed is not None else None)
        if running and elapsed and done:
            last_rate = last_rate or done / elapsed
        rows.append(LevelProgress(idx, conc, lv.status, done, total, frac, elapsed, eta))
    if not rows:
        return SweepProgress([], 0.0, None, None)
    # Weight levels by their planned work so a 10,000-request level counts more than a 100-request one.
    weights = [float(r.total) if r.total else 1.0 for r in rows]
    frac = sum(w * r.fraction for w, r in zip(weights, rows)) / sum(weights)
    started = detail.run.started_at
    end = (detail.run.finished_at or now) if run_over else now
    elapsed = max(0.0, (end - started).total_seconds()) if started else None
    etas = [r.eta_s for r in rows if r.status in ("pending", "running")]
    eta = None if any(e is None for e in etas) else sum(etas)
    if run_over:
        eta = 0.0
    return SweepProgress(rows, frac, elapsed, eta)


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def config_diff(configs: Sequence[dict]) -> list[dict]:
    """Settings that differ between runs: [{"setting": dotted key, "values": [value per run]}], sorted by key."""
    flats = [flatten(c or {}) for c in configs]
    keys = sorted(set().union(*flats)) if flats else []
    out = []
    for k in keys:
        vals = [f.get(k) for f in flats]
        if any(v != vals[0] for v in vals[1:]):
            out.append({"setting": k, "values": vals})
    return out


class RunSeries:
    """Incremental copy of one run's bulk series for a poller: each refresh() reads only rows it has not seen.

    Kept per viewer (the Live page stores one in its session), so a 100k-request sweep costs one full read when
    the page opens and a few new rows per tick after that. Columns are numpy arrays (floats with NaN for NULL),
    ready for the series functions above and for pandas."""

    def __init__(self, run_id: int):
        self.run_id = run_id
        self.requests: dict[str, np.ndarray] = {c: np.array([], dtype=np.float64) for c in _REQ_COLS}
        self.telemetry: dict[str, np.ndarray] = {c: np.array([], dtype=np.float64) for c in _TEL_COLS}
        self.engine: dict[str, np.ndarray] = {c: np.array([], dtype=np.float64) for c in _EM_COLS}

    @staticmethod
    def _last_id(cols: dict[str, np.ndarray]) -> int:
        return int(cols["id"][-1]) if cols["id"].size else 0

    @staticmethod
    def _extend(dst: dict[str, np.ndarray], src: dict[str, list]) -> int:
        n = len(src["id"])
        if n:
            for k, v in src.items():
                # ids and ns timestamps stay exact as int64; everything else is float (NULL -> NaN)
                new = np.asarray(v, dtype=np.int64 if k in ("id", "send_ns", "t_ns") else np.float64)
                dst[k] = np.concatenate([dst[k].astype(new.dtype, copy=False), new])
        return n

    def refresh(self, db: Db = None) -> int:
        """Fetch new rows of all three series; returns how many arrived."""
        n = self._extend(self.requests, request_points(self.run_id, db, after_id=self._last_id(self.requests)))
        n += self._extend(self.telemetry, telemetry_series(self.run_id, db, after_id=self._last_id(self.telemetry)))
        n += self._extend(self.engine, engine_metric_series(self.run_id, db, after_id=self._last_id(self.engine)))
        return n


# ------------------------------------------------------------------------------------ stored chart frames
def load_run_charts(run_id: int, version: int, finished_at: datetime | None, db: Db = None) -> str | None:
    """The stored chart frames (JSON text) of a finished run, or None when there are none for this frame
    `version` and this finished_at (a run id reused after a delete, or a changed layout, never serves stale ones)."""
    with open_db(db)() as s:
        row = s.get(RunChart, run_id)
        if row is None or row.version != version or row.finished_at != finished_at:
            return None
        return row.data


def save_run_charts(run_id: int, version: int, finished_at: datetime | None, data: str, db: Db = None) -> None:
    """Store (or replace) a finished run's chart frames."""
    with open_db(db).begin() as s:
        row = s.get(RunChart, run_id)
        if row is None:
            s.add(RunChart(run_id=run_id, version=version, finished_at=finished_at, data=data))
        else:
            row.version, row.finished_at, row.data = version, finished_at, data
