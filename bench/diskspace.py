"""How much a sweep will write to the history database, and a warning when its disk has far less room than that.

Used at the start of every run (worker and CLI alike): a disk that fills up mid-sweep stops the run (see
bench/sweep.py), so say so before an hour of load is spent.
"""
from __future__ import annotations

from pathlib import Path

from bench.config import RunConfig
from storage.db import free_bytes, to_url

# What a sweep writes, measured on a SQLite history (a 3,000-request level: 104 bytes per request row with its two
# indexes; telemetry and engine-metric rows ~370 bytes); rounded up for error texts and JSON summaries.
REQUEST_ROW_BYTES = 200
SAMPLE_ROW_BYTES = 400
RUN_OVERHEAD_BYTES = 1 << 20


def planned_db_bytes(config: RunConfig) -> tuple[int, int]:
    """(bytes, request rows) the planned levels will write, roughly. A level bound by time (a duration, or the
    steady-state rule's minimum) is counted at one request per user per second, and the steady rule at least its
    requests per user (short outputs send more: the estimate warns, it does not promise)."""
    wl = config.workload
    rows = 0
    seconds = 0.0
    for lvl in config.planned_levels():
        c = lvl.concurrency
        n = wl.requests_for(c)
        if n is None:
            level_s = wl.planned_seconds() or 0.0
            n = max(int(c * level_s), c * wl.min_requests_per_user if wl.steady_rule else 0)
            seconds += level_s
        rows += n + wl.warmup_requests
    per_s = config.telemetry_hz * max(1, config.gpu_count) + 1  # GPU samples + one engine /metrics scrape
    return RUN_OVERHEAD_BYTES + rows * REQUEST_ROW_BYTES + int(seconds * per_s * SAMPLE_ROW_BYTES), rows


def disk_space_warning(config: RunConfig, db: str | Path | None = None) -> str | None:
    """A warning when the SQLite history's disk has less than twice what the planned levels will write (a full disk
    mid-sweep stops the run); None when there is room, or for a database server."""
    url = to_url(db)
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):]
    free = free_bytes(path)
    need, rows = planned_db_bytes(config)
    if free is None or free >= 2 * need:
        return None
    return (f"warning: only {free / 2**20:,.1f} MiB free on the disk of {path}, and this sweep will write about "
            f"{need / 2**20:,.1f} MiB ({rows:,} request rows): it may stop with a full disk. Free space or give "
            f"another --db / MELT_DB.")
