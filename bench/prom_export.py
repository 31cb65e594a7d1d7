"""Prometheus exporter of a running sweep: `--metrics-port N` makes the worker serve GET /metrics on 127.0.0.1:N in
the text exposition format (0.0.4), so an existing Prometheus/Grafana can watch Melt runs.

What it exposes (from bench.live_monitor.LiveMonitor.snapshot(); times in seconds as Prometheus prefers):
  melt_run_info{run_id,engine,model,gpu,simulated} 1
  melt_level_running{level,concurrency,request_rate}         1 while a level runs
  melt_level_requests_total{level,concurrency,outcome}       ok / error, the running level and every finished one
  melt_level_output_tokens_per_second{level,concurrency}     finished levels (vllm bench definition)
  melt_level_requests_per_second / melt_level_goodput_requests_per_second
  melt_level_{ttft,tpot,e2e}_seconds{level,concurrency,quantile}  p50/p90/p95/p99 of finished levels
  melt_level_alerts{level,severity}                         alerts of finished levels
  melt_live_*                                               rolling values of the running level (last 10 s)
  melt_alert{rule,severity} 1                               alerts firing now
  melt_slo_search_best{mode}                                 the SLO search's answer so far (when one runs)
Binds loopback only. Pure `render(snapshot)` + a small stdlib HTTP server thread.
"""
from __future__ import annotations

import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

QUANTILES = (50, 90, 95, 99)
LIVE = {  # value key -> (metric name, help, scale)
    "ttft_p99_ms": ("melt_live_ttft_p99_seconds", "TTFT p99 over the last seconds of the running level", 1e-3),
    "e2e_p99_ms": ("melt_live_e2e_p99_seconds", "E2E latency p99 over the last seconds of the running level", 1e-3),
    "output_tok_s": ("melt_live_output_tokens_per_second", "output tokens per second, last seconds", 1.0),
    "error_rate_pct": ("melt_live_error_ratio", "failed / finished requests, last seconds", 1e-2),
    "queue_depth": ("melt_live_engine_waiting_requests", "engine queue depth (num_requests_waiting)", 1.0),
    "running": ("melt_live_engine_running_requests", "requests the engine is running", 1.0),
    "kv_cache_usage": ("melt_live_engine_kv_cache_usage_ratio", "engine KV cache use 0..1", 1.0),
    "gpu_util_min_pct": ("melt_live_gpu_util_min_ratio", "mean GPU utilisation of the least busy GPU, 0..1", 1e-2),
    "gpu_util_max_pct": ("melt_live_gpu_util_max_ratio", "mean GPU utilisation of the busiest GPU, 0..1", 1e-2),
    "gpu_mem_pct": ("melt_live_gpu_memory_used_ratio", "peak share of GPU memory used, 0..1", 1e-2),
}


def _esc(v) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**kv) -> str:
    return "{" + ",".join(f'{k}="{_esc("" if v is None else v)}"' for k, v in kv.items()) + "}"


def _num(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "NaN"
    return repr(float(v))


class _Out:
    def __init__(self):
        self.lines: list[str] = []
        self.seen: set[str] = set()

    def family(self, name: str, kind: str, help_: str) -> None:
        if name not in self.seen:
            self.seen.add(name)
            self.lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]

    def sample(self, name: str, labels: str, value) -> None:
        if value is None:
            return
        self.lines.append(f"{name}{labels} {_num(value)}")


def render(snap: dict) -> str:
    o = _Out()
    info = snap.get("info") or {}
    o.family("melt_run_info", "gauge", "the Melt run being measured (simulated=true: numbers from the simulator)")
    o.sample("melt_run_info", _labels(run_id=info.get("run_id"), engine=info.get("engine"), model=info.get("model"),
                                      gpu=info.get("gpu"), simulated=str(bool(info.get("simulated"))).lower()), 1)
    levels = list(snap.get("finished") or [])
    cur = snap.get("level")
    o.family("melt_level_running", "gauge", "1 for the level running now")
    o.family("melt_level_requests_total", "counter", "measured requests of a level by outcome")
    if cur:
        lab = dict(level=cur["index"], concurrency=cur["concurrency"])
        o.sample("melt_level_running", _labels(**lab, request_rate=cur.get("request_rate") or ""), 1)
        o.sample("melt_level_requests_total", _labels(**lab, outcome="ok"), cur.get("ok", 0))
        o.sample("melt_level_requests_total", _labels(**lab, outcome="error"), cur.get("err", 0))
    for lv in levels:
        lab = dict(level=lv["index"], concurrency=lv.get("concurrency"))
        o.sample("melt_level_requests_total", _labels(**lab, outcome="ok"), lv.get("n_ok") or 0)
        o.sample("melt_level_requests_total", _labels(**lab, outcome="error"), lv.get("n_err") or 0)
    for key, name, help_ in (("output_tok_s", "melt_level_output_tokens_per_second", "output tokens / level time"),
                             ("req_s", "melt_level_requests_per_second", "OK requests / level time"),
                             ("goodput_req_s", "melt_level_goodput_requests_per_second",
                              "requests meeting every SLO / level time")):
        o.family(name, "gauge", help_ + " (finished levels)")
        for lv in levels:
            o.sample(name, _labels(level=lv["index"], concurrency=lv.get("concurrency")), lv.get(key))
    for metric in ("ttft", "tpot", "e2e"):
        name = f"melt_level_{metric}_seconds"
        o.family(name, "gauge", f"{metric.upper()} percentiles of finished levels")
        for lv in levels:
            st = lv.get(f"{metric}_ms") or {}
            for q in QUANTILES:
                v = st.get(f"p{q}")
                o.sample(name, _labels(level=lv["index"], concurrency=lv.get("concurrency"), quantile=q / 100),
                         None if v is None else v / 1e3)
    o.family("melt_level_alerts", "gauge", "alerts of a finished level by severity")
    for lv in levels:
        alerts = lv.get("alerts") or []
        for sev in ("warning", "critical"):
            o.sample("melt_level_alerts", _labels(level=lv["index"], severity=sev),
                     sum(1 for a in alerts if a.get("severity") == sev))
    values = snap.get("values") or {}
    for key, (name, help_, scale) in LIVE.items():
        o.family(name, "gauge", help_)
        v = values.get(key)
        o.sample(name, "", None if v is None else v * scale)
    o.family("melt_alert", "gauge", "1 for each alert firing now")
    for a in snap.get("alerts") or []:
        o.sample("melt_alert", _labels(rule=a["rule"], severity=a["severity"]), 1)
    search = snap.get("search")
    if search:
        o.family("melt_slo_search_best", "gauge", "highest value meeting the SLO limits so far")
        o.sample("melt_slo_search_best", _labels(mode=search.get("mode")), search.get("best"))
    return "\n".join(o.lines) + "\n"


class MetricsServer:
    """GET /metrics -> render(snapshot_fn()). Loopback only; port 0 = a free one (see .port)."""

    def __init__(self, port: int, snapshot_fn: Callable[[], dict], host: str = "127.0.0.1"):
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("the metrics exporter binds loopback only")
        snap = snapshot_fn

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                try:
                    body = render(snap()).encode()
                    code = 200
                except Exception as e:  # noqa: BLE001
                    body, code = f"# exporter error: {e!r}\n".encode(), 500
                self.send_response(code)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._t = threading.Thread(target=self.httpd.serve_forever, daemon=True, name="melt-metrics-exporter")

    def start(self) -> "MetricsServer":
        self._t.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._t.join(timeout=5)
