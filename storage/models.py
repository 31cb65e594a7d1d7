"""SQLAlchemy 2.0 models. Times are UTC datetimes for humans and int wall-clock nanoseconds (t_ns) for
anything that must line up across requests, GPU samples and engine metrics (one clock: time.time_ns()).

Schema changes go through Alembic migrations (storage/migrations), so shared history files keep opening.
"""
from __future__ import annotations

import enum
import uuid as uuid_mod
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Enum, Float, ForeignKey, Index, Integer, MetaData, String, Text
from sqlalchemy import false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UtcDateTime(TypeDecorator):
    """Stores UTC; SQLite drops tzinfo, so put it back on the way out."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: Melt stores UTC-aware times only")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return value.replace(tzinfo=timezone.utc) if value is not None else None


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UtcDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class RunStatus(str, enum.Enum):
    queued = "queued"
    starting = "starting"      # worker up, engine launching
    running = "running"        # levels in progress
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"
    aborted = "aborted"        # worker died (stale heartbeat), found at next start

    @property
    def finished(self) -> bool:
        return self in (RunStatus.completed, RunStatus.failed, RunStatus.cancelled, RunStatus.aborted)


class LevelStatus(str, enum.Enum):
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Identity across histories (export bundles): an import recognizes a run it already has. Nullable only in the
    # schema (see migration 0005); every row gets one.
    uuid: Mapped[str | None] = mapped_column(String(36), default=lambda: str(uuid_mod.uuid4()), index=True, unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[RunStatus] = mapped_column(Enum(RunStatus, native_enum=False, length=20), default=RunStatus.queued, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    config: Mapped[dict[str, Any]] = mapped_column(JSON)          # RunConfig.model_dump(mode="json")
    engine_kind: Mapped[str] = mapped_column(String(20))
    model: Mapped[str] = mapped_column(String(300))
    gpu: Mapped[str | None] = mapped_column(String(100))           # catalog id or detected name
    gpu_count: Mapped[int] = mapped_column(default=1)
    simulated: Mapped[bool] = mapped_column(Boolean, default=False)
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list)
    notes: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text)
    versions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # melt, python, engine, driver, ...
    host: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)      # hostname, cpu count, ...
    worker_pid: Mapped[int | None]
    heartbeat_at: Mapped[datetime | None]
    price_per_gpu_hour: Mapped[float | None]
    # Denormalised for the history table (kept up to date by the worker): no join per row.
    peak_output_tok_s: Mapped[float | None]
    best_goodput_req_s: Mapped[float | None]
    # Remote agents (bench/agent.py): the agent a queued run is addressed to (None: a worker on the starting
    # machine), the agent that took it, and a Cancel for a worker on another host (its agent delivers the SIGTERM).
    target_agent: Mapped[str | None] = mapped_column(String(100), index=True)
    agent: Mapped[str | None] = mapped_column(String(100))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # A projection (bench/project.py): the measured run it came from, the fitted constants and the expected error.
    # None for every measured or plainly simulated run.
    projection: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    levels: Mapped[list["Level"]] = relationship(back_populates="run", cascade="all, delete-orphan", order_by="Level.idx")
    instances: Mapped[list["EngineInstance"]] = relationship(back_populates="run", cascade="all, delete-orphan")


class EngineInstance(Base):
    __tablename__ = "engine_instances"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    model: Mapped[str] = mapped_column(String(300))
    name: Mapped[str | None] = mapped_column(String(100))   # its name in the run's deployment (a recipe instance)
    weight: Mapped[float | None]                             # its share of the traffic (relative to the others)
    argv: Mapped[list[Any]] = mapped_column(JSON, default=list)
    env: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)   # additions only, secrets redacted
    version: Mapped[str | None] = mapped_column(String(100))
    base_url: Mapped[str | None] = mapped_column(String(300))
    pid: Mapped[int | None]
    proc_tag: Mapped[str | None] = mapped_column(String(64))           # MELT_ENGINE_TAG: finds its processes
    state: Mapped[str] = mapped_column(String(20), default="created")  # engines.supervisor.ProcState value
    phase: Mapped[str | None] = mapped_column(String(100))             # startup phase from the log
    log_path: Mapped[str | None] = mapped_column(String(500))
    log_tail: Mapped[str] = mapped_column(Text, default="")
    gpus: Mapped[list[Any]] = mapped_column(JSON, default=list)
    launched_at: Mapped[datetime | None]
    ready_at: Mapped[datetime | None]
    stopped_at: Mapped[datetime | None]
    startup_s: Mapped[float | None]
    exit_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)

    run: Mapped[Run] = relationship(back_populates="instances")


class Level(Base):
    __tablename__ = "levels"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    idx: Mapped[int]
    concurrency: Mapped[int]
    request_rate: Mapped[float | None]
    repeat: Mapped[int] = mapped_column(default=0, server_default="0")  # 0-based repeat of (concurrency, rate)
    status: Mapped[LevelStatus] = mapped_column(Enum(LevelStatus, native_enum=False, length=20), default=LevelStatus.running)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    start_ns: Mapped[int | None] = mapped_column(BigInteger)
    end_ns: Mapped[int | None] = mapped_column(BigInteger)
    n_requested: Mapped[int | None]      # None for duration-bounded levels
    n_sent: Mapped[int] = mapped_column(default=0)
    n_ok: Mapped[int] = mapped_column(default=0)
    n_err: Mapped[int] = mapped_column(default=0)
    duration_s: Mapped[float | None]
    output_tok_s: Mapped[float | None]
    total_tok_s: Mapped[float | None]
    req_s: Mapped[float | None]
    goodput_req_s: Mapped[float | None]
    ttft_p50_ms: Mapped[float | None]
    ttft_p99_ms: Mapped[float | None]
    tpot_p50_ms: Mapped[float | None]
    e2e_p50_ms: Mapped[float | None]
    client_cpu_pct: Mapped[float | None]
    client_bound: Mapped[bool] = mapped_column(Boolean, default=False)  # client was the bottleneck: level invalid
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # the full metrics summary (bench.metrics)
    telemetry: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # power/energy/J per token/verdict
    error: Mapped[str | None] = mapped_column(Text)

    run: Mapped[Run] = relationship(back_populates="levels")

    __table_args__ = (Index("ix_levels_run_id_idx", "run_id", "idx", unique=True),)


class Request(Base):
    """One row per request (warm-up included, flagged). Inter-chunk gaps are summarised per request, never one row per chunk."""

    __tablename__ = "requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    level_id: Mapped[int] = mapped_column(ForeignKey("levels.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int]                                     # order of sending within the level
    warmup: Mapped[bool] = mapped_column(Boolean, default=False)
    user: Mapped[int | None]                             # global user index 0..C-1 (None: unknown, a lost result)
    send_ns: Mapped[int] = mapped_column(BigInteger)     # wall clock when the request was written
    queue_ms: Mapped[float | None]                       # client-side delay between "due" and "sent"
    ttft_ms: Mapped[float | None]
    e2e_ms: Mapped[float | None]
    input_tokens: Mapped[int | None]                     # from the server's usage
    output_tokens: Mapped[int | None]                    # from the server's usage
    chunks: Mapped[int | None]                           # content chunks received
    itl_mean_ms: Mapped[float | None]
    itl_max_ms: Mapped[float | None]
    ok: Mapped[bool] = mapped_column(Boolean)
    status_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    # The engine instance that served it (a deployment of several; see migration 0006 for why no foreign key).
    instance_id: Mapped[int | None]

    __table_args__ = (Index("ix_requests_run_id_level_id", "run_id", "level_id"),)


class TelemetrySample(Base):
    """One NVML (or simulated) sample of one GPU. Null = not supported on that GPU."""

    __tablename__ = "telemetry_samples"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    t_ns: Mapped[int] = mapped_column(BigInteger)
    gpu_index: Mapped[int]
    gpu_uuid: Mapped[str | None] = mapped_column(String(100))
    simulated: Mapped[bool] = mapped_column(Boolean, default=False)
    util_gpu: Mapped[float | None]
    util_mem: Mapped[float | None]
    mem_used_mb: Mapped[float | None]
    mem_total_mb: Mapped[float | None]
    power_w: Mapped[float | None]          # instantaneous where offered, else averaged (see power_avg_w)
    power_avg_w: Mapped[float | None]
    energy_j: Mapped[float | None]         # cumulative counter since driver load
    temp_gpu_c: Mapped[float | None]
    temp_mem_c: Mapped[float | None]
    sm_clock_mhz: Mapped[float | None]
    mem_clock_mhz: Mapped[float | None]
    throttle_reasons: Mapped[int | None] = mapped_column(BigInteger)  # NVML clocks-event bitmask
    pstate: Mapped[int | None]
    pcie_tx_kbs: Mapped[float | None]
    pcie_rx_kbs: Mapped[float | None]
    sm_active: Mapped[float | None]        # GPM, Hopper+
    tensor_active: Mapped[float | None]
    dram_bw_util: Mapped[float | None]
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (Index("ix_telemetry_samples_run_id_t_ns", "run_id", "t_ns"),)


class EngineMetricSample(Base):
    """Engine /metrics scraped at ~1 Hz, mapped to one schema across engines."""

    __tablename__ = "engine_metric_samples"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    instance_id: Mapped[int | None] = mapped_column(ForeignKey("engine_instances.id", ondelete="CASCADE"))
    t_ns: Mapped[int] = mapped_column(BigInteger)
    running: Mapped[float | None]
    waiting: Mapped[float | None]
    kv_cache_usage: Mapped[float | None]    # 0..1
    prompt_tokens_total: Mapped[float | None]
    generation_tokens_total: Mapped[float | None]
    preemptions_total: Mapped[float | None]
    requests_success_total: Mapped[float | None]
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (Index("ix_engine_metric_samples_run_id_t_ns", "run_id", "t_ns"),)


class Event(Base):
    """Timeline: phases, log tails, errors, health facts (payload JSON), anything the UI shows as text."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    t_ns: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(40))   # phase | log | error | info | gpu_facts | verdict | xid
    message: Mapped[str] = mapped_column(Text, default="")
    level_id: Mapped[int | None] = mapped_column(ForeignKey("levels.id", ondelete="CASCADE"))
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (Index("ix_events_run_id_t_ns", "run_id", "t_ns"),)


class Agent(Base):
    """One `melt agent` (bench/agent.py) by name: where it runs and when it last proved alive. A run taken by an
    agent whose heartbeat went stale is reaped as `aborted` from any host."""

    __tablename__ = "agents"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int | None]
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[datetime | None]   # set when the agent exits cleanly
    version: Mapped[str | None] = mapped_column(String(50))


class RunChart(Base):
    """A finished run's chart frames (the Live page's time series, already bucketed to a few hundred points per
    line), stored once so a first viewer reads one small row instead of every request, sample and metric row.
    Derived data: made by the worker at the run's end, or on the first view of a run without one (an older run,
    one reaped, one imported), and remade when `version` (the frame layout) or the run's finished_at differ.
    Not exported in bundles."""

    __tablename__ = "run_charts"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int]
    finished_at: Mapped[datetime | None]     # the run's finished_at these frames were made from
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    data: Mapped[str] = mapped_column(Text)  # JSON: {frame name: {"columns": [...], "data": {column: [...]}}, ...}
