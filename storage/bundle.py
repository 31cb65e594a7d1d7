"""Export bundles: runs moved between histories as one gzip-compressed JSON file (`./melt export` / `import`).

A bundle holds everything of each run: the run row (config, versions, host, cost inputs, results), its engine
instances, levels with their summaries, request rows, telemetry samples, engine-metric samples and events. Row ids
are not kept: levels and instances carry a `ref` (their id in the exporting history) that children point at, and an
import gives every row a new id. A run is known by its `uuid` (migration 0005), so importing a run the history
already has skips it and says which run it is there.

Why the format is this way:
- JSON inside gzip: readable with `zcat`, no code in it (no pickle), floats written by repr and parsed back to the
  same double, so every number survives exactly; datetimes as ISO-8601 with their UTC offset.
- The schema is derived from storage.models column by column (`_row_model`), so a new column cannot be forgotten
  by the exporter without the round-trip test noticing, and every row is checked with pydantic (extra="forbid",
  the column's type, nullability and length) on import. JSON columns say what they hold (`_JSON_TYPES`); level
  summaries and the config are checked where the pages read them (a number where a number is read), and stored as
  given.
- An import is untrusted data: the compressed file and its expansion are size-limited (a decompression bomb stops
  at the limit, it is never expanded in full), nothing in it is executed, fields that name things on the exporting
  machine (worker / engine pids, process tags, the engine log's path) are not exported and are refused if present,
  only finished runs travel (a "running" run would be reaped here), and all runs are written in one transaction:
  a bad bundle writes nothing. Every refusal is a `BundleError` naming what is wrong and where.
"""
from __future__ import annotations

import gzip
import json
import uuid as uuid_mod
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, create_model
from sqlalchemy import JSON, Boolean, DateTime, Enum, Float, Integer, String, Text, insert, select
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeDecorator

from storage.db import open_db
from storage.models import (EngineInstance, EngineMetricSample, Event, Level, Request, Run, RunStatus,
                            TelemetrySample)

FORMAT = "melt-bundle"
VERSION = 1
SUFFIX = ".melt.json.gz"
MAX_COMPRESSED_BYTES = 128 << 20      # the file as given
MAX_EXPANDED_BYTES = 512 << 20        # its JSON after decompression: ~1M request rows (46 MiB per 100k)
MAX_TEXT = 4 << 20                    # one Text field (log tails, errors, notes)

# Columns never exported: ids (remapped), what names processes or files on the exporting machine, and the run
# queue's own state (which agent a run was addressed to / taken by, a pending cancel: bench/agent.py).
_LOCAL = {"id", "run_id", "level_id", "instance_id", "worker_pid", "heartbeat_at", "pid", "proc_tag", "log_path",
          "target_agent", "agent", "cancel_requested"}
# Foreign keys travel as refs to the row's exported parent.
_REFS = {Request: {"level_ref": int, "instance_ref": Optional[int]}, EngineMetricSample: {"instance_ref": Optional[int]},
         Event: {"level_ref": Optional[int]}, Level: {"ref": int}, EngineInstance: {"ref": int}}


class BundleError(ValueError):
    """A bundle that cannot be read or imported; the message says what is wrong (and where in the bundle)."""


def _shape(model):
    """A JSON value that must have `model`'s shape where the pages read it, but is stored exactly as given (a
    validated copy would turn 3 into 3.0): a hostile summary like {"ttft_ms": 5} would crash a page, not show."""
    def check(v):
        model.model_validate(v)
        return v
    return AfterValidator(check)


_Num = Optional[float]
_Pcts = Optional[dict[str, _Num]]


class _Steady(BaseModel):
    model_config = ConfigDict(extra="allow")
    duration_s: _Num = None
    output_tok_s: _Num = None
    req_s: _Num = None
    ttft_ms: _Pcts = None
    tpot_ms: _Pcts = None
    e2e_ms: _Pcts = None


class _Summary(BaseModel):
    """What tables, charts and cost read of a level summary (bench.metrics.summarize writes many more keys)."""
    model_config = ConfigDict(extra="allow")
    concurrency: Optional[int] = None
    n_sent: Optional[int] = None
    n_ok: Optional[int] = None
    n_err: Optional[int] = None
    repeat: Optional[int] = None
    request_rate: _Num = None
    duration_s: _Num = None
    output_tok_s: _Num = None
    total_tok_s: _Num = None
    req_s: _Num = None
    goodput_req_s: _Num = None
    client_cpu_pct: _Num = None
    client_bound: Optional[bool] = None
    error: Optional[str] = None
    ttft_ms: _Pcts = None
    tpot_ms: _Pcts = None
    itl_ms: _Pcts = None
    e2e_ms: _Pcts = None
    steady: Optional[_Steady] = None


class _Projection(BaseModel):
    """runs.projection (bench/project.py) where the pages read it: the source run and the expected-error lines."""
    model_config = ConfigDict(extra="allow")
    from_run: Optional[int] = None
    from_uuid: Optional[str] = Field(default=None, max_length=36)
    expected: Optional[list[Annotated[str, Field(max_length=2000)]]] = None


class _Config(BaseModel):
    model_config = ConfigDict(extra="allow")
    workload: Optional[dict[str, Any]] = None
    engine: Optional[dict[str, Any]] = None
    price_per_gpu_hour: _Num = None
    gpu_count: Optional[int] = None


_Obj = dict[str, Any]
_JSON_TYPES: dict[str, Any] = {
    "runs.config": Annotated[_Obj, _shape(_Config)], "runs.tags": list[str], "runs.versions": _Obj, "runs.host": _Obj,
    "runs.projection": Annotated[_Obj, _shape(_Projection)],
    "engine_instances.argv": list[str], "engine_instances.env": _Obj, "engine_instances.gpus": list[Any],
    "levels.summary": Annotated[_Obj, _shape(_Summary)], "levels.telemetry": _Obj,
    "telemetry_samples.extra": _Obj, "engine_metric_samples.extra": _Obj, "events.payload": _Obj,
}


def _columns(model) -> list[str]:
    return [c.key for c in model.__table__.columns if c.key not in _LOCAL]


def _field_type(col) -> Any:
    t = col.type
    if isinstance(t, TypeDecorator):  # UtcDateTime
        t = t.impl_instance
    if isinstance(t, Enum):
        py: Any = Literal[tuple(t.enums)]
    elif isinstance(t, Boolean):
        py = bool
    elif isinstance(t, Integer):  # BigInteger too; a database holds 64 bits at most
        py = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
    elif isinstance(t, Float):
        py = float
    elif isinstance(t, DateTime):
        py = AwareDatetime
    elif isinstance(t, JSON):
        py = _JSON_TYPES.get(f"{col.table.name}.{col.key}")
        if py is None:
            raise TypeError(f"storage.bundle: say what {col.table.name}.{col.key} holds in _JSON_TYPES")
    elif isinstance(t, (String, Text)):
        py = Annotated[str, Field(max_length=t.length or MAX_TEXT)]
    else:  # a column type this module does not know yet: fail loudly at import time of the module
        raise TypeError(f"storage.bundle: no bundle type for {col.table.name}.{col.key} ({t!r})")
    return Optional[py] if col.nullable else py


def _row_model(model, name: str):
    """The pydantic schema of one exported row of `model`: its columns (minus _LOCAL) and its refs."""
    fields: dict[str, Any] = {}
    for c in model.__table__.columns:
        if c.key in _LOCAL:
            continue
        default = None if c.nullable else ...
        fields[c.key] = (_field_type(c), default)
    for ref, typ in _REFS.get(model, {}).items():
        fields[ref] = (typ, None if typ is not int else ...)
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


RunRow = _row_model(Run, "RunRow")
InstanceRow = _row_model(EngineInstance, "InstanceRow")
LevelRow = _row_model(Level, "LevelRow")
RequestRow = _row_model(Request, "RequestRow")
TelemetryRow = _row_model(TelemetrySample, "TelemetryRow")
EngineMetricRow = _row_model(EngineMetricSample, "EngineMetricRow")
EventRow = _row_model(Event, "EventRow")

_FINISHED = tuple(s.value for s in RunStatus if s.finished)


class RunBundle(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run: RunRow  # type: ignore[valid-type]
    instances: list[InstanceRow] = []  # type: ignore[valid-type]
    levels: list[LevelRow] = []  # type: ignore[valid-type]
    requests: list[RequestRow] = []  # type: ignore[valid-type]
    telemetry: list[TelemetryRow] = []  # type: ignore[valid-type]
    engine_metrics: list[EngineMetricRow] = []  # type: ignore[valid-type]
    events: list[EventRow] = []  # type: ignore[valid-type]


class Header(BaseModel):
    """Read first, so a bundle of another format version is named as such instead of failing field by field."""
    model_config = ConfigDict(extra="ignore")
    format: str
    version: int


class Bundle(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["melt-bundle"]
    version: Literal[1]
    exported_at: AwareDatetime
    runs: list[RunBundle] = Field(min_length=1)


# --- export ---------------------------------------------------------------------------------------------------

def _dump(obj, cols: list[str]) -> dict:
    return {k: getattr(obj, k) for k in cols}


def _bulk(s: Session, model, run_id: int, refs: dict[str, str]) -> list[dict]:
    """Every row of one run in `model`, as dicts of the exported columns (+ parent refs), in id order."""
    cols = _columns(model)
    table = model.__table__
    fk = list(refs)
    rows = s.execute(select(*(table.c[c] for c in cols), *(table.c[c] for c in fk))
                     .where(table.c.run_id == run_id).order_by(table.c.id)).all()
    out = []
    for r in rows:
        d = dict(zip(cols, r[:len(cols)]))
        for name, val in zip(fk, r[len(cols):]):
            d[refs[name]] = val
        out.append(d)
    return out


def _run_bundle(s: Session, run: Run) -> dict:
    if not RunStatus(run.status).finished:
        raise BundleError(f"run {run.id} is {run.status.value}: export it once it has finished")
    if not run.uuid:  # a row written without the model's default (raw SQL): give it its identity now
        run.uuid = str(uuid_mod.uuid4())
    run_cols = _columns(Run)
    d = _dump(run, run_cols)
    d["status"] = run.status.value
    levels = []
    for lv in s.scalars(select(Level).where(Level.run_id == run.id).order_by(Level.id)):
        row = _dump(lv, _columns(Level))
        row["status"] = lv.status.value
        row["ref"] = lv.id
        levels.append(row)
    instances = []
    for inst in s.scalars(select(EngineInstance).where(EngineInstance.run_id == run.id).order_by(EngineInstance.id)):
        row = _dump(inst, _columns(EngineInstance))
        row["ref"] = inst.id
        instances.append(row)
    return {"run": d, "instances": instances, "levels": levels,
            "requests": _bulk(s, Request, run.id, {"level_id": "level_ref", "instance_id": "instance_ref"}),
            "telemetry": _bulk(s, TelemetrySample, run.id, {}),
            "engine_metrics": _bulk(s, EngineMetricSample, run.id, {"instance_id": "instance_ref"}),
            "events": _bulk(s, Event, run.id, {"level_id": "level_ref"})}


def _json_default(v):
    if isinstance(v, datetime):
        return v.isoformat()
    raise TypeError(f"cannot put {type(v).__name__} in a bundle")


def export_bundle(run_ids: list[int], db=None) -> bytes:
    """The gzip-compressed bundle of these runs (in the order given). LookupError for an unknown id,
    BundleError for a run still active."""
    if not run_ids:
        raise BundleError("no runs to export")
    factory = open_db(db)
    with factory.begin() as s:
        runs = []
        for rid in dict.fromkeys(run_ids):
            run = s.get(Run, rid)
            if run is None:
                raise LookupError(f"run {rid} not found")
            runs.append(_run_bundle(s, run))
    doc = {"format": FORMAT, "version": VERSION, "exported_at": datetime.now(timezone.utc).isoformat(), "runs": runs}
    raw = json.dumps(doc, default=_json_default, separators=(",", ":")).encode()
    return gzip.compress(raw, compresslevel=6, mtime=0)


def write_bundle(run_ids: list[int], path: str | Path, db=None) -> int:
    """Write the bundle to `path`; returns its size in bytes."""
    data = export_bundle(run_ids, db)
    Path(path).write_bytes(data)
    return len(data)


# --- import ---------------------------------------------------------------------------------------------------

def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n:,} bytes"


def expand(data: bytes, max_expanded: int = MAX_EXPANDED_BYTES) -> bytes:
    """Gunzip `data`, never producing more than `max_expanded` bytes (a bomb stops there)."""
    if data[:2] != b"\x1f\x8b":
        raise BundleError("not a Melt bundle: the file is not gzip-compressed (a bundle is what `./melt export` "
                          "writes, *.melt.json.gz)")
    d = zlib.decompressobj(wbits=31)
    out = bytearray()
    buf = data
    try:
        while buf and not d.eof:
            out += d.decompress(buf, max_expanded + 1 - len(out))
            if len(out) > max_expanded:
                raise BundleError(f"the bundle expands to more than {_mib(max_expanded)} (the import limit): "
                                  f"refused unread, it may be a decompression bomb")
            buf = d.unconsumed_tail
    except zlib.error as e:
        raise BundleError(f"the bundle's compressed data is damaged: {e}") from None
    if not d.eof:
        raise BundleError("the bundle is truncated: its compressed data ends early (an incomplete download or copy?)")
    if d.unused_data:
        raise BundleError("the bundle has unexpected bytes after its compressed data")
    return bytes(out)


def _where(loc: tuple) -> str:
    parts = []
    for x in loc:
        parts.append(f"[{x}]" if isinstance(x, int) else f".{x}")
    return "".join(parts).lstrip(".") or "(top level)"


def parse_bundle(data: bytes, *, max_compressed: int = MAX_COMPRESSED_BYTES,
                 max_expanded: int = MAX_EXPANDED_BYTES) -> Bundle:
    """Size checks, decompression and schema validation of an untrusted bundle. BundleError on anything wrong."""
    if len(data) > max_compressed:
        raise BundleError(f"the bundle is {_mib(len(data))}, more than the import limit of {_mib(max_compressed)}")
    raw = expand(data, max_expanded)
    try:
        head = Header.model_validate_json(raw)
    except ValidationError as e:
        err = e.errors()[0]
        if err["type"].startswith("json"):
            raise BundleError(f"the bundle is not valid JSON: {err['msg']}") from None
        raise BundleError("not a Melt bundle: it has no format and version fields") from None
    if head.format != FORMAT:
        raise BundleError(f"not a Melt bundle: format is {head.format[:80]!r}, expected {FORMAT!r}")
    if head.version != VERSION:
        newer = " (written by a newer Melt: update this one)" if head.version > VERSION else ""
        raise BundleError(f"bundle format version {head.version} is not supported: this Melt reads version "
                          f"{VERSION}{newer}")
    try:
        bundle = Bundle.model_validate_json(raw)
    except ValidationError as e:
        errs = e.errors()
        shown = "; ".join(f"{_where(x['loc'])}: {x['msg']}" for x in errs[:5])
        more = f" (and {len(errs) - 5} more)" if len(errs) > 5 else ""
        raise BundleError(f"the bundle does not match the schema: {shown}{more}") from None
    _check_links(bundle)
    return bundle


def _check_links(bundle: Bundle) -> None:
    seen = set()
    for i, rb in enumerate(bundle.runs):
        where = f"runs[{i}]"
        if rb.run.status not in _FINISHED:
            raise BundleError(f"{where}.run.status: {rb.run.status!r}, only finished runs can be imported")
        if not rb.run.uuid:
            raise BundleError(f"{where}.run.uuid: missing")
        try:
            uuid_mod.UUID(rb.run.uuid)
        except ValueError:
            raise BundleError(f"{where}.run.uuid: {rb.run.uuid[:40]!r} is not a UUID") from None
        if rb.run.uuid in seen:
            raise BundleError(f"{where}.run.uuid: the same run is in the bundle twice")
        if rb.run.projection is not None and not rb.run.simulated:
            raise BundleError(f"{where}.run.projection: a projection is a simulated run, but this run says measured")
        seen.add(rb.run.uuid)
        for name, rows in (("levels", rb.levels), ("instances", rb.instances)):
            refs = [r.ref for r in rows]
            if len(set(refs)) != len(refs):
                raise BundleError(f"{where}.{name}: two rows have the same ref")
        idxs = [lv.idx for lv in rb.levels]
        if len(set(idxs)) != len(idxs):
            raise BundleError(f"{where}.levels: two levels have the same idx")
        levels = {lv.ref for lv in rb.levels}
        insts = {x.ref for x in rb.instances}
        for name, rows, attr, known in (("requests", rb.requests, "level_ref", levels),
                                        ("requests", rb.requests, "instance_ref", insts),
                                        ("events", rb.events, "level_ref", levels),
                                        ("engine_metrics", rb.engine_metrics, "instance_ref", insts)):
            for j, r in enumerate(rows):
                ref = getattr(r, attr)
                if ref is not None and ref not in known:
                    raise BundleError(f"{where}.{name}[{j}].{attr}: {ref} is not a row of this run")


@dataclass
class ImportResult:
    imported: list[tuple[str, int]] = field(default_factory=list)   # (uuid, new run id)
    already: list[tuple[str, int]] = field(default_factory=list)    # (uuid, the run id it has here)

    def message(self) -> str:
        parts = []
        if self.imported:
            parts.append("imported as run(s) " + ", ".join(f"#{i}" for _, i in self.imported))
        if self.already:
            parts.append("already in this history as run(s) " + ", ".join(f"#{i}" for _, i in self.already)
                         + " (not imported again)")
        return "; ".join(parts)


def _rows(rows: list[BaseModel], **extra) -> list[dict]:
    return [{**r.model_dump(), **extra} for r in rows]


def import_bundle(data: bytes, db=None, **limits) -> ImportResult:
    """Validate `data` (see parse_bundle) and add its runs to the history in one transaction. Runs whose uuid the
    history already has are skipped and named. Raises BundleError and writes nothing on a bad bundle."""
    bundle = parse_bundle(data, **limits)
    result = ImportResult()
    factory = open_db(db)
    with factory.begin() as s:
        for rb in bundle.runs:
            have = s.scalar(select(Run.id).where(Run.uuid == rb.run.uuid))
            if have is not None:
                result.already.append((rb.run.uuid, have))
                continue
            run = Run(**rb.run.model_dump())
            if run.projection:  # "projected from #N": N is the exporting history's id; this history's, if it has it
                src = run.projection.get("from_uuid")
                local = s.scalar(select(Run.id).where(Run.uuid == src)) if src else None
                old = f"from run #{run.projection.get('from_run')} "
                new = f"from run #{local} " if local is not None else "from a run of another history "
                run.projection = {**run.projection, "from_run": local, "expected": [
                    str(x).replace(old, new, 1) for x in run.projection.get("expected") or []]}
            s.add(run)
            s.flush()
            inst_ids, level_ids = {}, {}
            for x in rb.instances:
                row = x.model_dump()
                ref = row.pop("ref")
                inst = EngineInstance(run_id=run.id, **row)
                s.add(inst)
                s.flush()
                inst_ids[ref] = inst.id
            for x in rb.levels:
                row = x.model_dump()
                ref = row.pop("ref")
                lv = Level(run_id=run.id, **row)
                s.add(lv)
                s.flush()
                level_ids[ref] = lv.id
            reqs = []
            for r in rb.requests:
                row = r.model_dump()
                row["level_id"] = level_ids[row.pop("level_ref")]
                ref = row.pop("instance_ref")
                row["instance_id"] = inst_ids[ref] if ref is not None else None
                reqs.append(row | {"run_id": run.id})
            events = []
            for r in rb.events:
                row = r.model_dump()
                ref = row.pop("level_ref")
                events.append(row | {"run_id": run.id, "level_id": level_ids[ref] if ref is not None else None})
            metrics = []
            for r in rb.engine_metrics:
                row = r.model_dump()
                ref = row.pop("instance_ref")
                metrics.append(row | {"run_id": run.id, "instance_id": inst_ids[ref] if ref is not None else None})
            for model, rows in ((Request, reqs), (TelemetrySample, _rows(rb.telemetry, run_id=run.id)),
                                (EngineMetricSample, metrics), (Event, events)):
                if rows:
                    s.execute(insert(model), rows)
            result.imported.append((rb.run.uuid, run.id))
    return result


def read_bundle_file(path: str | Path, max_compressed: int = MAX_COMPRESSED_BYTES) -> bytes:
    """The file's bytes, read no further than the size limit (a huge file is refused without reading it)."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(max_compressed + 1)
    except OSError as e:
        raise BundleError(f"cannot read the file: {e.strerror or e}") from None
    if len(data) > max_compressed:
        raise BundleError(f"the file is more than the import limit of {_mib(max_compressed)}")
    return data
