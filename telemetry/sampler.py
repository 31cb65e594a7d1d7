"""Telemetry sampler: a thread that reads a source at a fixed rate and hands rows to a callback in batches.

Rows are TelemetrySample columns minus id/run_id: every row of one tick carries the same `t_ns = time.time_ns()`
(the run's one clock) and `simulated`. The sampler never writes the database: the run worker passes `on_batch` and
does that itself, so a slow disk never stalls sampling.

Sources (all with `kind`, `simulated`, `reason`, `read() -> list[dict]`, `close()`):
- NvmlSource(gpus): real GPUs through telemetry.nvml.
- SimSource(base_url): the sim engine's modelled GPUs, GET {base_url}/sim/telemetry -> {"simulated": true, "gpus": [..]}.
- MultiSimSource(base_urls): several sim instances of one simulated deployment on disjoint GPUs (each labels its
  GPUs with their box positions), read one after another into one tick: the node's power is their sum.
- DcgmSource(url) (telemetry/dcgm.py): a remote host's GPUs from its DCGM exporter's Prometheus page.
- NullSource(reason): nothing to sample; the sampler does not even start a thread, and the run carries on.
"""
from __future__ import annotations

import http.client
import ipaddress
import json
import threading
import time
from typing import Any, Callable
from urllib.parse import urlsplit

from telemetry import nvml
from telemetry.nvml import SAMPLE_KEYS

ROW_KEYS = ("t_ns", "simulated") + SAMPLE_KEYS  # == TelemetrySample columns minus id, run_id


class NullSource:
    kind = "none"
    simulated = False

    def __init__(self, reason: str):
        self.reason = reason

    def read(self) -> list[dict]:
        return []

    def health_facts(self) -> dict:
        return {}

    def close(self) -> None:
        pass


class NvmlSource:
    """Real GPUs. `gpus`: NVML indices or UUIDs (see telemetry.nvml on CUDA_VISIBLE_DEVICES); None = every GPU.
    The energy counter costs ~4 ms CPU per read on an H100, so it is read every `energy_interval_s` (rows in between
    have energy_j None; the counter is cumulative, so energy over a window is unaffected)."""

    kind = "nvml"
    simulated = False

    def __init__(self, gpus: list[int | str] | None = None, energy_interval_s: float = 1.0):
        keys = list(gpus) if gpus is not None else list(range(nvml.gpu_count()))
        self.gpus = keys
        self.readers = [nvml.make_reader(k, energy_interval_s) for k in keys]
        self.reason = f"NVML: GPU(s) {', '.join(str(k) for k in keys)}"

    def read(self) -> list[dict]:
        return [r.sample() if r is not None else _empty_row(k, "NVML unavailable")
                for k, r in zip(self.gpus, self.readers)]

    def health_facts(self) -> dict[str, dict]:
        """{str(NVML index): nvml.health_facts()} of this source's GPUs (JSON-ready keys), for run start and end."""
        out = {}
        for k in self.gpus:
            f = nvml.health_facts(k)
            out[str(f.get("index", k))] = f
        return out

    def close(self) -> None:
        for r in self.readers:
            if r is not None:
                r.close()


class SimSource:
    """The sim engine's modelled telemetry. Rows are always simulated=True, whatever the server says.
    One persistent HTTP connection (stdlib http.client): cheap at 4 Hz and no extra dependency."""

    kind = "sim"
    simulated = True

    def __init__(self, base_url: str, timeout_s: float = 2.0, path: str = "/sim/telemetry"):
        u = urlsplit(base_url.rstrip("/"))
        if u.scheme not in ("http", "") or not u.hostname:
            raise ValueError(f"SimSource needs an http:// base URL, got {base_url!r}")
        self.host, self.port = u.hostname, u.port or 80
        self.path = (u.path or "") + path
        self.timeout_s = timeout_s
        self.reason = f"simulated telemetry from {base_url.rstrip('/')}{path}"
        self._conn: http.client.HTTPConnection | None = None

    def _get(self) -> bytes:
        for attempt in (0, 1):  # a kept-alive connection the server closed fails once: reconnect and retry
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            try:
                self._conn.request("GET", self.path, headers={"Accept": "application/json"})
                resp = self._conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"GET {self.path}: HTTP {resp.status}")
                return body
            except (http.client.HTTPException, ConnectionError, OSError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def read(self) -> list[dict]:
        payload = json.loads(self._get())
        gpus = payload.get("gpus") if isinstance(payload, dict) else None
        if not isinstance(gpus, list):
            raise ValueError("sim telemetry: no 'gpus' list in the response")
        rows = []
        for g in gpus:
            row = {k: g.get(k) for k in SAMPLE_KEYS}
            unknown = {k: v for k, v in g.items() if k not in ROW_KEYS}
            if unknown or isinstance(g.get("extra"), dict):
                row["extra"] = {**(g.get("extra") or {}), **unknown}
            rows.append(row)
        return rows

    def health_facts(self) -> dict:
        return {}  # the sim models no ECC/remap counters: nothing to compare

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


class MultiSimSource:
    """The modelled GPUs of several sim instances (a simulated deployment on disjoint GPUs), side by side."""

    kind = "sim"
    simulated = True

    def __init__(self, base_urls: list[str]):
        self.parts = [SimSource(u) for u in base_urls]
        self.reason = (f"simulated telemetry of {len(self.parts)} sim instances ("
                       + ", ".join(p.reason.removeprefix("simulated telemetry from ") for p in self.parts) + ")")

    def read(self) -> list[dict]:
        return [row for p in self.parts for row in p.read()]

    def health_facts(self) -> dict:
        return {}

    def close(self) -> None:
        for p in self.parts:
            p.close()


def _empty_row(gpu: Any, why: str) -> dict:
    row = {k: None for k in SAMPLE_KEYS}
    row["gpu_index"] = gpu if isinstance(gpu, int) else None
    row["extra"] = {"error": why}
    return row


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_source(engine_kind: str, base_url: str | list[str] | None, gpus: list[int] | None,
                gpu_metrics_url: str | None = None):
    """-> (source, message). A gpu_metrics_url -> DcgmSource (the engine host's DCGM exporter, whatever the engine);
    "sim" -> SimSource (MultiSimSource for a list of URLs); NVML available -> NvmlSource; else NullSource. Never raises: without telemetry Melt carries
    on and says why ("no GPU telemetry available: <reason>")."""
    if gpu_metrics_url:
        from telemetry.dcgm import DcgmSource

        try:
            src = DcgmSource(gpu_metrics_url)
        except ValueError as e:
            return NullSource(str(e)), f"no GPU telemetry available: {e}"
        return src, f"GPU telemetry: {src.reason}"
    if engine_kind == "sim":
        if not base_url:
            src = NullSource("sim engine has no base URL yet")
            return src, f"no GPU telemetry available: {src.reason}"
        try:
            src = MultiSimSource(base_url) if isinstance(base_url, list) else SimSource(base_url)
        except ValueError as e:
            return NullSource(str(e)), f"no GPU telemetry available: {e}"
        return src, f"SIMULATED telemetry ({src.reason})"
    if engine_kind == "openai" and base_url and not _is_loopback(urlsplit(base_url).hostname):
        # An external server's GPUs are not this machine's: sampling local GPUs would be misleading.
        src = NullSource(f"the engine runs on another host ({urlsplit(base_url).hostname})")
        return src, f"no GPU telemetry available: {src.reason}"
    ok, reason = nvml.nvml_status()
    if not ok:
        src = NullSource(reason)
        return src, f"no GPU telemetry available: {reason}"
    src = NvmlSource(gpus)
    return src, f"GPU telemetry: {src.reason}"


class TelemetrySampler:
    """Samples `source` at `hz` in a thread; `on_batch(rows)` about every `batch_s` seconds and once more at stop.

    Never raises out of its thread: source and callback errors are counted (`errors`, `callback_errors`,
    `last_error`). Its own CPU cost is measured with the thread's CPU clock (time.thread_time) and reported by
    stop(): {samples, rows, cpu_seconds, cpu_pct_of_core, errors, ...}."""

    def __init__(self, source, hz: float = 4.0, on_batch: Callable[[list[dict]], None] | None = None,
                 batch_s: float = 1.0):
        if hz <= 0:
            raise ValueError("hz must be > 0")
        self.source, self.hz, self.on_batch, self.batch_s = source, hz, on_batch, batch_s
        self.period = 1.0 / hz
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.latest: list[dict] = []     # last tick's rows, for a live status line
        self.samples = 0                 # ticks that produced rows
        self.ticks = 0
        self.rows = 0
        self.late_ticks = 0              # ticks skipped because a read overran the period
        self.errors = 0
        self.callback_errors = 0
        self.last_error = ""
        self.cpu_seconds = 0.0
        self.wall_seconds = 0.0
        self._stats: dict | None = None

    @property
    def active(self) -> bool:
        return not isinstance(self.source, NullSource)

    def is_alive(self) -> bool:
        """Sampling now (started, not stopped, source not null)."""
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def start(self) -> None:
        if self._thread is not None or not self.active:
            return
        self._thread = threading.Thread(target=self._run, name="melt-telemetry-sampler", daemon=True)
        self._thread.start()

    def _emit(self, batch: list[dict]) -> None:
        if not batch or self.on_batch is None:
            return
        try:
            self.on_batch(batch)
        except Exception as e:
            self.callback_errors += 1
            self.last_error = f"on_batch: {e!r}"

    def _tick(self) -> list[dict]:
        t_ns = time.time_ns()  # one timestamp per tick, shared by all GPUs of the tick
        try:
            raw = self.source.read()
        except Exception as e:
            self.errors += 1
            self.last_error = f"{type(e).__name__}: {e}"
            return []
        sim = bool(self.source.simulated)
        rows = []
        for r in raw:
            row = {"t_ns": t_ns, "simulated": sim}
            row.update({k: r.get(k) for k in SAMPLE_KEYS})
            rows.append(row)
        return rows

    def _run(self) -> None:
        cpu0, wall0 = time.thread_time(), time.monotonic()
        batch: list[dict] = []
        last_flush = wall0
        next_t = wall0
        try:
            while not self._stop.is_set():
                rows = self._tick()
                self.ticks += 1
                if rows:
                    self.samples += 1
                    self.rows += len(rows)
                    with self._lock:
                        self.latest = rows
                    batch.extend(rows)
                now = time.monotonic()
                if now - last_flush >= self.batch_s:
                    self._emit(batch)
                    batch, last_flush = [], now
                # Fixed-rate schedule; if a read overran, skip the missed ticks instead of bursting to catch up.
                next_t += self.period
                if next_t < now:
                    missed = int((now - next_t) / self.period) + 1
                    self.late_ticks += missed
                    next_t += missed * self.period
                self._stop.wait(max(0.0, next_t - time.monotonic()))
        except Exception as e:  # defensive: nothing above should raise, but never die silently
            self.errors += 1
            self.last_error = f"sampler loop: {e!r}"
        finally:
            self._emit(batch)
            self.cpu_seconds = time.thread_time() - cpu0
            self.wall_seconds = time.monotonic() - wall0

    def stats(self) -> dict:
        wall = self.wall_seconds
        return {
            "source": getattr(self.source, "kind", "?"),
            "simulated": bool(getattr(self.source, "simulated", False)),
            "reason": getattr(self.source, "reason", ""),
            "hz": self.hz,
            "samples": self.samples,
            "ticks": self.ticks,
            "rows": self.rows,
            "late_ticks": self.late_ticks,
            "errors": self.errors,
            "callback_errors": self.callback_errors,
            "last_error": self.last_error,
            "cpu_seconds": round(self.cpu_seconds, 6),
            "wall_seconds": round(wall, 3),
            "cpu_pct_of_core": round(100.0 * self.cpu_seconds / wall, 3) if wall > 0 else 0.0,
        }

    def stop(self) -> dict:
        """Stop, flush the last batch, close the source; returns stats. Idempotent."""
        if self._stats is not None:
            return self._stats
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            self.source.close()
        except Exception:
            pass
        self._stats = self.stats()
        return self._stats
