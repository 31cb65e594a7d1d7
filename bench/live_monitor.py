"""The worker's live view of a run: rolling numbers of the running level, alerts on them, and the finished levels,
for the Live page (through "alerts" events) and the Prometheus exporter (bench/prom_export.py).

The sweep feeds it what it already has in memory (request results as they stream in, telemetry batches, engine
/metrics samples); a 1 Hz thread evaluates the alert thresholds over the last `window_s` seconds of the running
level and calls `on_change(alerts, values)` when the set of firing (rule, severity) pairs changes, so the history
gets one event per change, not one per second. Never raises into the sweep.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable

import numpy as np

from bench.alerts import AlertThresholds, evaluate, gpu_values


class LiveMonitor:
    def __init__(self, thresholds: AlertThresholds, on_change: Callable[[list[dict], dict], None] | None = None,
                 window_s: float = 10.0, gpu_window_s: float = 5.0, info: dict | None = None):
        self.th, self.on_change, self.window_s, self.gpu_window_s = thresholds, on_change, window_s, gpu_window_s
        self.info = dict(info or {})
        self._lock = threading.Lock()
        self._results: deque = deque()      # (end_ns, ok, ttft_ms, e2e_ms, output_tokens), last window only
        self._telemetry: deque = deque()
        self._engine: dict | None = None
        self.level: dict | None = None      # {index, concurrency, request_rate, start_ns, sent, ok, err}
        self.finished: list[dict] = []      # finished level summaries (trimmed to what the exporter shows)
        self.alerts: list[dict] = []
        self.values: dict[str, Any] = {}
        self.search: dict | None = None
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- feeding (any thread)
    def start_level(self, index: int, concurrency: int, request_rate: float | None) -> None:
        with self._lock:
            self._results.clear()
            self.level = {"index": index, "concurrency": concurrency, "request_rate": request_rate,
                          "start_ns": time.time_ns(), "sent": 0, "ok": 0, "err": 0, "output_tokens": 0}

    def feed_results(self, batch) -> None:
        with self._lock:
            lvl = self.level
            for r in batch:
                if getattr(r, "warmup", False):
                    continue
                end = r.send_ns + int((r.e2e_ms or 0) * 1e6)
                self._results.append((end, bool(r.ok), r.ttft_ms, r.e2e_ms, r.output_tokens or 0))
                if lvl is not None:
                    first = lvl.get("first_send_ns")
                    lvl["first_send_ns"] = r.send_ns if first is None else min(first, r.send_ns)
                    lvl["sent"] += 1
                    lvl["ok" if r.ok else "err"] += 1
                    lvl["output_tokens"] += (r.output_tokens or 0) if r.ok else 0

    def feed_telemetry(self, rows: list[dict]) -> None:
        with self._lock:
            self._telemetry.extend(rows)
            cut = time.time_ns() - int(self.gpu_window_s * 1e9)
            while self._telemetry and (self._telemetry[0].get("t_ns") or 0) < cut:
                self._telemetry.popleft()

    def feed_engine(self, row: dict) -> None:
        with self._lock:
            self._engine = row

    def end_level(self, summary: dict, status: str) -> None:
        keep = {k: summary.get(k) for k in ("concurrency", "request_rate", "n_sent", "n_ok", "n_err", "output_tok_s",
                                            "req_s", "goodput_req_s", "ttft_ms", "tpot_ms", "e2e_ms", "alerts",
                                            "duration_s")}
        with self._lock:
            keep["index"] = self.level["index"] if self.level else len(self.finished)
            keep["status"] = status
            self.finished.append(keep)
            self.level = None
            self._results.clear()

    # ---- reading
    def current_values(self, now_ns: int | None = None) -> dict[str, float | None]:
        """Rolling values over the last window of the running level (requests that ended in it)."""
        now_ns = now_ns or time.time_ns()
        with self._lock:
            cut = now_ns - int(self.window_s * 1e9)
            # Results that ended before the window are never read again: dropped here (about in end order, so the
            # deque holds the last window plus a batch's disorder, not every request of a long level).
            while self._results and self._results[0][0] < cut:
                self._results.popleft()
            rows = [r for r in self._results if r[0] >= cut]
            tele = list(self._telemetry)
            eng = self._engine
            start = self.level["start_ns"] if self.level else None
            load_from = self.level.get("first_send_ns") if self.level else None
        ok = [r for r in rows if r[1]]
        span_s = min(self.window_s, (now_ns - start) / 1e9) if start else self.window_s

        def p99(vals):
            vals = [v for v in vals if v is not None]
            return float(np.percentile(vals, 99)) if vals else None

        vals: dict[str, float | None] = {
            "ttft_p99_ms": p99([r[2] for r in ok]),
            "e2e_p99_ms": p99([r[3] for r in ok]),
            "output_tok_s": sum(r[4] for r in ok) / span_s if start and span_s > 0.5 else None,
            "error_rate_pct": 100.0 * (len(rows) - len(ok)) / len(rows) if rows else None,
            "queue_depth": (eng or {}).get("waiting"),
            "running": (eng or {}).get("running"),
            "kv_cache_usage": (eng or {}).get("kv_cache_usage"),
        }
        # GPU samples since this level's load began (its first request's send, known once one has finished): the
        # seconds before it (prompts being made, connections opened) are idle and would read as low utilisation
        vals.update(gpu_values([t for t in tele if load_from is not None and (t.get("t_ns") or 0) >= load_from]))
        return vals

    def tick(self) -> list[dict]:
        if self.level is None:  # between levels: keep what fired last (the next level re-evaluates)
            return self.alerts
        try:
            values = self.current_values()
            alerts = evaluate(values, self.th)
            changed = {(a["rule"], a["severity"]) for a in alerts} != {(a["rule"], a["severity"]) for a in self.alerts}
            with self._lock:
                self.values, self.alerts = values, alerts
            if changed and self.on_change is not None:
                self.on_change(alerts, values)
            return alerts
        except Exception:  # noqa: BLE001 - the monitor must never break a measurement
            self.errors += 1
            return self.alerts

    def snapshot(self) -> dict:
        with self._lock:
            return {"info": dict(self.info), "level": dict(self.level) if self.level else None,
                    "values": dict(self.values), "alerts": list(self.alerts), "finished": list(self.finished),
                    "search": self.search}

    # ---- thread
    def start(self, period_s: float = 1.0) -> None:
        def run():
            while not self._stop.wait(period_s):
                self.tick()

        self._thread = threading.Thread(target=run, daemon=True, name="melt-live-monitor")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.alerts and self.on_change is not None:  # the run is over: nothing fires any more
            self.alerts = []
            try:
                self.on_change([], {})
            except Exception:  # noqa: BLE001
                self.errors += 1
