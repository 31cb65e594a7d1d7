"""TelemetrySampler: batching, one timestamp per tick, error counting, CPU accounting. No timing assertions:
counts are checked for presence and consistency, never for a rate."""
import threading
import time

from telemetry.nvml import SAMPLE_KEYS
from telemetry.sampler import ROW_KEYS, NullSource, TelemetrySampler


class TwoGpuSource:
    """A source standing in for two GPUs, in the shape NvmlSource/SimSource return (keys = SAMPLE_KEYS)."""

    kind, simulated, reason = "test", False, "two fake GPUs"

    def __init__(self, fail_every: int = 0):
        self.n = 0
        self.fail_every = fail_every
        self.closed = False

    def read(self):
        self.n += 1
        if self.fail_every and self.n % self.fail_every == 0:
            raise OSError("sensor read failed")
        rows = []
        for i in (0, 1):
            r = {k: None for k in SAMPLE_KEYS}
            r.update(gpu_index=i, power_w=100.0 + i, energy_j=float(self.n), extra={"unknown_key_dropped": 1})
            r["not_a_column"] = 1
            rows.append(r)
        return rows

    def close(self):
        self.closed = True


def _wait_for(pred, limit_s=10.0):
    t0 = time.monotonic()
    while not pred() and time.monotonic() - t0 < limit_s:
        time.sleep(0.02)


def test_rows_batches_and_one_clock_per_tick():
    batches = []
    src = TwoGpuSource()
    s = TelemetrySampler(src, hz=50.0, on_batch=batches.append, batch_s=0.1)
    s.start()
    _wait_for(lambda: s.samples >= 10)
    stats = s.stop()
    assert src.closed
    rows = [r for b in batches for r in b]
    assert stats["samples"] >= 10 and stats["rows"] == len(rows) == 2 * stats["samples"]
    assert all(set(r) == set(ROW_KEYS) for r in rows)           # extra keys from a source are dropped
    assert all(r["simulated"] is False for r in rows)
    by_t = {}
    for r in rows:
        by_t.setdefault(r["t_ns"], []).append(r["gpu_index"])
    assert all(sorted(v) == [0, 1] for v in by_t.values())      # both GPUs of a tick share one t_ns
    ts = sorted(by_t)
    assert ts == sorted(set(ts)) and len(ts) == stats["samples"]
    assert stats["errors"] == 0 and stats["cpu_seconds"] >= 0 and 0 <= stats["cpu_pct_of_core"] <= 100
    assert s.stop() is stats                                      # idempotent


def test_source_errors_are_counted_and_sampling_goes_on():
    rows = []
    s = TelemetrySampler(TwoGpuSource(fail_every=3), hz=50.0, on_batch=rows.extend, batch_s=0.05)
    s.start()
    _wait_for(lambda: s.errors >= 3 and s.samples >= 6)
    stats = s.stop()
    assert stats["errors"] >= 3 and "sensor read failed" in stats["last_error"]
    assert stats["samples"] >= 6 and len(rows) == stats["rows"]


def test_callback_errors_do_not_kill_the_sampler():
    calls = []

    def bad(batch):
        calls.append(len(batch))
        raise RuntimeError("database locked")

    s = TelemetrySampler(TwoGpuSource(), hz=50.0, on_batch=bad, batch_s=0.02)
    s.start()
    _wait_for(lambda: len(calls) >= 3)
    assert s._thread.is_alive()
    stats = s.stop()
    assert stats["callback_errors"] >= 3 and "database locked" in stats["last_error"]


def test_last_batch_is_flushed_at_stop():
    got = []
    s = TelemetrySampler(TwoGpuSource(), hz=20.0, on_batch=got.append, batch_s=3600)  # never flushes on time
    s.start()
    _wait_for(lambda: s.samples >= 2)
    stats = s.stop()
    assert len(got) == 1 and len(got[0]) == stats["rows"]


def test_null_source_starts_no_thread():
    before = threading.active_count()
    s = TelemetrySampler(NullSource("no GPU telemetry available: test"), hz=4.0, on_batch=lambda b: None)
    s.start()
    assert threading.active_count() == before and not s.active
    stats = s.stop()
    assert stats["samples"] == 0 and stats["reason"].endswith("test") and stats["cpu_seconds"] == 0
