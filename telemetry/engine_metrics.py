"""Engine /metrics: a small Prometheus text parser, one normalised schema across engines, and a ~1 Hz scraper.

Normalised keys (storage EngineMetricSample columns): running, waiting, kv_cache_usage (0..1), prompt_tokens_total,
generation_tokens_total, preemptions_total, requests_success_total, extra. Series of one metric with several label
sets (data-parallel engines, several models) are summed; kv_cache_usage is averaged (it is a fraction).

Names, checked against the engines' source:
- vLLM V1 (vllm/v1/metrics/loggers.py, labels model_name + engine): vllm:num_requests_running,
  vllm:num_requests_waiting, vllm:kv_cache_usage_perc (a 0..1 fraction despite the name; V0 and early V1 called it
  vllm:gpu_cache_usage_perc), counters vllm:prompt_tokens_total, vllm:generation_tokens_total,
  vllm:num_preemptions_total, vllm:request_success_total{finished_reason=stop|length|abort|error|repetition}.
  requests_success_total sums every finished_reason except abort and error (vLLM counts those in the same
  "success" counter; a real /metrics capture of vLLM 0.32 shows all five label values). The sim engine exposes the
  same names.
- SGLang (python/sglang/srt/metrics/collector.py; only with --enable-metrics): sglang:num_running_reqs,
  sglang:num_queue_reqs, sglang:token_usage (0..1), sglang:prompt_tokens_total, sglang:generation_tokens_total,
  sglang:num_requests_total (finished requests), sglang:num_retracted_requests_total (newer) for preemptions; older
  builds only have the sglang:num_retracted_reqs gauge (kept in extra, it is not a counter).
- TensorRT-LLM trtllm-serve (tensorrt_llm/metrics/collector.py): Prometheus text at /prometheus/metrics (its /metrics
  is JSON iteration stats), names trtllm_num_requests_running, trtllm_num_requests_waiting,
  trtllm_kv_cache_utilization (used/max blocks), trtllm_prompt_tokens_total, trtllm_generation_tokens_total,
  trtllm_request_success_total{finished_reason}. Older releases expose only a few of these: missing -> None.
  When /prometheus/metrics is absent the scraper falls back to /metrics JSON (numActiveRequests, numQueuedRequests,
  kvCacheStats).
"""
from __future__ import annotations

import http.client
import json
import math
import threading
import time
from typing import Any, Callable
from urllib.parse import urlsplit

Series = list[tuple[dict[str, str], float]]

NORMALIZED_KEYS = ("running", "waiting", "kv_cache_usage", "prompt_tokens_total", "generation_tokens_total",
                   "preemptions_total", "requests_success_total", "extra")


# ------------------------------------------------------------------------------------------------------- parser

def _parse_value(s: str) -> float:
    s = s.strip()
    low = s.lower()
    if low in ("+inf", "inf"):
        return math.inf
    if low == "-inf":
        return -math.inf
    if low == "nan":
        return math.nan
    return float(s)


def _parse_labels(text: str, i: int) -> tuple[dict[str, str], int]:
    """Parse `{a="x",b="y\\"z"}` starting at text[i] == '{'; returns (labels, index after '}')."""
    labels: dict[str, str] = {}
    i += 1
    n = len(text)
    while i < n:
        while i < n and text[i] in " ,":
            i += 1
        if i < n and text[i] == "}":
            return labels, i + 1
        eq = text.index("=", i)
        name = text[i:eq].strip()
        i = eq + 1
        while text[i] == " ":
            i += 1
        if text[i] != '"':
            raise ValueError("label value must be quoted")
        i += 1
        buf = []
        while True:
            c = text[i]
            if c == "\\":
                nxt = text[i + 1]
                buf.append({"n": "\n", "\\": "\\", '"': '"'}.get(nxt, "\\" + nxt))
                i += 2
            elif c == '"':
                i += 1
                break
            else:
                buf.append(c)
                i += 1
        labels[name] = "".join(buf)
    raise ValueError("unterminated label set")


def parse_prometheus(text: str) -> dict[str, Series]:
    """Prometheus text exposition (0.0.4, and the OpenMetrics subset engines emit) -> {sample name: [(labels, value)]}.

    Sample names are kept as written (`vllm:prompt_tokens_total`, `..._bucket`, `..._sum`, `..._created`).
    Comments, HELP/TYPE lines, timestamps and exemplars are ignored; a malformed line is skipped, not fatal."""
    out: dict[str, Series] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            brace = line.find("{")
            space = line.find(" ")
            if brace != -1 and (space == -1 or brace < space):
                name = line[:brace].strip()
                labels, j = _parse_labels(line, brace)
                rest = line[j:]
            else:
                name, _, rest = line.partition(" ")
                labels = {}
            rest = rest.split(" # ", 1)[0]  # OpenMetrics exemplar
            parts = rest.split()
            if not name or not parts:
                continue
            value = _parse_value(parts[0])  # parts[1], if any, is a timestamp
        except (ValueError, IndexError):
            continue
        out.setdefault(name, []).append((labels, value))
    return out


# ---------------------------------------------------------------------------------------------------- normalise

def _sum(parsed: dict[str, Series], *names: str) -> float | None:
    """Sum over label sets of the first name present (names = newer first, then older spellings)."""
    for n in names:
        series = parsed.get(n)
        if series:
            vals = [v for _, v in series if not math.isnan(v)]
            return float(sum(vals)) if vals else None
    return None


def _mean(parsed: dict[str, Series], *names: str) -> float | None:
    for n in names:
        series = parsed.get(n)
        if series:
            vals = [v for _, v in series if not math.isnan(v)]
            return float(sum(vals) / len(vals)) if vals else None
    return None


_NOT_SUCCESS = {"abort", "error", "cancelled", "timeout"}  # finished, but not successfully


def _sum_excluding(parsed: dict[str, Series], name: str, label: str, exclude: set[str]) -> float | None:
    series = parsed.get(name)
    if not series:
        return None
    return float(sum(v for labels, v in series if labels.get(label) not in exclude and not math.isnan(v)))


def _by_label(parsed: dict[str, Series], name: str, label: str) -> dict[str, float] | None:
    series = parsed.get(name)
    if not series:
        return None
    out: dict[str, float] = {}
    for labels, v in series:
        k = labels.get(label, "")
        out[k] = out.get(k, 0.0) + v
    return out


def _hist_mean(parsed: dict[str, Series], base: str) -> float | None:
    s, c = _sum(parsed, base + "_sum"), _sum(parsed, base + "_count")
    return s / c if s is not None and c else None


def _detect(parsed: dict[str, Series]) -> str:
    for n in parsed:
        if n.startswith("vllm:"):
            return "vllm"
        if n.startswith("sglang:"):
            return "sglang"
        if n.startswith("trtllm_") or n.startswith("trtllm:"):
            return "trtllm"
    return "unknown"


def _vllm(p: dict[str, Series]) -> dict:
    extra = {
        "waiting_by_reason": _by_label(p, "vllm:num_requests_waiting_by_reason", "reason"),
        "requests_by_finished_reason": _by_label(p, "vllm:request_success_total", "finished_reason"),
        "prefix_cache_queries_total": _sum(p, "vllm:prefix_cache_queries_total"),
        "prefix_cache_hits_total": _sum(p, "vllm:prefix_cache_hits_total"),
        "ttft_mean_s": _hist_mean(p, "vllm:time_to_first_token_seconds"),
        "itl_mean_s": _hist_mean(p, "vllm:inter_token_latency_seconds"),
        "e2e_mean_s": _hist_mean(p, "vllm:e2e_request_latency_seconds"),
        "queue_time_mean_s": _hist_mean(p, "vllm:request_queue_time_seconds"),
    }
    return {
        "running": _sum(p, "vllm:num_requests_running"),
        "waiting": _sum(p, "vllm:num_requests_waiting"),
        "kv_cache_usage": _mean(p, "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
        "prompt_tokens_total": _sum(p, "vllm:prompt_tokens_total"),
        "generation_tokens_total": _sum(p, "vllm:generation_tokens_total"),
        "preemptions_total": _sum(p, "vllm:num_preemptions_total"),
        "requests_success_total": _sum_excluding(p, "vllm:request_success_total", "finished_reason", _NOT_SUCCESS),
        "extra": extra,
    }


def _sglang(p: dict[str, Series]) -> dict:
    extra = {
        "gen_throughput_tok_s": _sum(p, "sglang:gen_throughput"),
        "num_used_tokens": _sum(p, "sglang:num_used_tokens"),
        "max_total_num_tokens": _sum(p, "sglang:max_total_num_tokens"),
        "cache_hit_rate": _mean(p, "sglang:cache_hit_rate"),
        "retracted_reqs_gauge": _sum(p, "sglang:num_retracted_reqs"),
        "aborted_requests_total": _sum(p, "sglang:num_aborted_requests_total"),
        "ttft_mean_s": _hist_mean(p, "sglang:time_to_first_token_seconds"),
        "itl_mean_s": _hist_mean(p, "sglang:inter_token_latency_seconds"),
        "e2e_mean_s": _hist_mean(p, "sglang:e2e_request_latency_seconds"),
    }
    return {
        "running": _sum(p, "sglang:num_running_reqs"),
        "waiting": _sum(p, "sglang:num_queue_reqs"),
        "kv_cache_usage": _mean(p, "sglang:token_usage"),
        "prompt_tokens_total": _sum(p, "sglang:prompt_tokens_total"),
        "generation_tokens_total": _sum(p, "sglang:generation_tokens_total"),
        "preemptions_total": _sum(p, "sglang:num_retracted_requests_total"),
        "requests_success_total": _sum(p, "sglang:num_requests_total"),
        "extra": extra,
    }


def _trtllm(p: dict[str, Series]) -> dict:
    def n(suffix: str) -> tuple[str, str]:  # Dynamo re-exports with a "trtllm:" prefix
        return "trtllm_" + suffix, "trtllm:" + suffix

    extra = {
        "kv_cache_hit_rate": _mean(p, *n("kv_cache_hit_rate")),
        "requests_completed_total": _sum(p, *n("num_requests_completed_total")),
        "paused_requests": _sum(p, *n("num_paused_requests")),
        "requests_by_finished_reason": _by_label(p, "trtllm_request_success_total", "finished_reason"),
        "ttft_mean_s": _hist_mean(p, "trtllm_time_to_first_token_seconds"),
        "e2e_mean_s": _hist_mean(p, "trtllm_e2e_request_latency_seconds"),
    }
    return {
        "running": _sum(p, *n("num_requests_running")),
        "waiting": _sum(p, *n("num_requests_waiting")),
        "kv_cache_usage": _mean(p, *n("kv_cache_utilization")),
        "prompt_tokens_total": _sum(p, *n("prompt_tokens_total")),
        "generation_tokens_total": _sum(p, *n("generation_tokens_total")),
        "preemptions_total": None,  # trtllm-serve exposes no preemption counter
        "requests_success_total": _sum_excluding(p, n("request_success_total")[0], "finished_reason", _NOT_SUCCESS),
        "extra": extra,
    }


def normalize_trtllm_iteration_stats(stats: Any) -> dict:
    """trtllm-serve's /metrics JSON (a list of per-iteration stats dicts; the newest last) -> normalised dict."""
    last = stats[-1] if isinstance(stats, list) and stats else stats if isinstance(stats, dict) else {}
    kv = last.get("kvCacheStats") or {}
    used, mx = kv.get("usedNumBlocks"), kv.get("maxNumBlocks")
    return {
        "running": _f(last.get("numActiveRequests")),
        "waiting": _f(last.get("numQueuedRequests")),
        "kv_cache_usage": used / mx if used is not None and mx else None,
        "prompt_tokens_total": None,
        "generation_tokens_total": None,
        "preemptions_total": None,
        "requests_success_total": None,
        "extra": {"source": "iteration_stats", "iter_latency_ms": _f(last.get("iterLatencyMS")),
                  "gpu_mem_usage_bytes": _f(last.get("gpuMemUsage"))},
    }


def _f(v: Any) -> float | None:
    try:
        return float(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def normalize(kind: str, parsed: dict[str, Series]) -> dict:
    """Map parsed /metrics of engine `kind` (vllm, sim, sglang, trtllm; anything else is detected from the names)
    to NORMALIZED_KEYS. Missing metrics are None; extra keeps a few engine-specific numbers (None values dropped)."""
    fam = {"vllm": "vllm", "sim": "vllm", "sglang": "sglang", "trtllm": "trtllm"}.get(kind) or _detect(parsed)
    if fam == "vllm" and not any(k.startswith("vllm:") for k in parsed):
        fam = _detect(parsed)  # e.g. an "openai" server that is really SGLang
    if fam == "vllm":
        out = _vllm(parsed)
    elif fam == "sglang":
        out = _sglang(parsed)
    elif fam == "trtllm":
        out = _trtllm(parsed)
    else:
        out = {k: None for k in NORMALIZED_KEYS}
        out["extra"] = {}
    extra = {k: v for k, v in (out.get("extra") or {}).items() if v is not None}
    # Melt's own sim gauges (e.g. melt:sim_lag_seconds) ride along in extra.
    for name, series in parsed.items():
        if name.startswith("melt:") and not name.endswith(("_created", "_bucket")):
            extra[name.split(":", 1)[1]] = float(sum(v for _, v in series))
    extra["family"] = fam
    out["extra"] = extra
    return out


def metrics_path(kind: str) -> str:
    return "/prometheus/metrics" if kind == "trtllm" else "/metrics"


# ------------------------------------------------------------------------------------------------------ scraper

class MetricsScraper:
    """Thread: every `interval_s`, GET {base_url}{path}, parse, normalise, on_sample({t_ns, **normalised}).

    Never raises out of the thread: failures (refused, timeout, HTTP error, unparsable) are counted with the last
    error; a 404 from SGLang says it needs --enable-metrics. t_ns is taken just before the request (one clock)."""

    def __init__(self, base_url: str, kind: str, on_sample: Callable[[dict], None] | None = None,
                 interval_s: float = 1.0, timeout_s: float = 2.0, path: str | None = None):
        u = urlsplit(base_url.rstrip("/"))
        if not u.hostname:
            raise ValueError(f"bad base URL {base_url!r}")
        self.host, self.port, self.prefix = u.hostname, u.port or 80, u.path or ""
        self.kind, self.on_sample, self.interval_s, self.timeout_s = kind, on_sample, interval_s, timeout_s
        self.path = path or metrics_path(kind)
        self.scrapes = self.ok = self.failures = self.callback_errors = 0
        self.last_error = ""
        self.cpu_seconds = 0.0
        self._conn: http.client.HTTPConnection | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stats: dict | None = None

    def _get(self, path: str) -> tuple[int, str, str]:
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            try:
                self._conn.request("GET", self.prefix + path)
                resp = self._conn.getresponse()
                body = resp.read().decode("utf-8", errors="replace")
                return resp.status, resp.getheader("Content-Type", "") or "", body
            except (http.client.HTTPException, ConnectionError, OSError):
                self._close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def scrape_once(self) -> dict | None:
        """One scrape -> {t_ns, running, ...} or None (failure counted). Also what the thread calls."""
        t_ns = time.time_ns()
        self.scrapes += 1
        try:
            status, ctype, body = self._get(self.path)
            if status == 404 and self.kind == "trtllm" and self.path == "/prometheus/metrics":
                self.path = "/metrics"  # older trtllm-serve: JSON iteration stats only
                status, ctype, body = self._get(self.path)
            if status != 200:
                hint = " (SGLang needs --enable-metrics)" if status == 404 and self.kind == "sglang" else ""
                raise RuntimeError(f"GET {self.path}: HTTP {status}{hint}")
            if "json" in ctype or body.lstrip()[:1] in ("[", "{"):
                sample = normalize_trtllm_iteration_stats(json.loads(body))
            else:
                parsed = parse_prometheus(body)
                if not parsed:
                    raise ValueError(f"GET {self.path}: no metrics in the response")
                sample = normalize(self.kind, parsed)
        except Exception as e:
            self.failures += 1
            self.last_error = f"{type(e).__name__}: {e}"
            return None
        self.ok += 1
        return {"t_ns": t_ns, **sample}

    def _run(self) -> None:
        cpu0 = time.thread_time()
        next_t = time.monotonic()
        try:
            while not self._stop.is_set():
                sample = self.scrape_once()
                if sample is not None and self.on_sample is not None:
                    try:
                        self.on_sample(sample)
                    except Exception as e:
                        self.callback_errors += 1
                        self.last_error = f"on_sample: {e!r}"
                next_t += self.interval_s
                now = time.monotonic()
                if next_t < now:
                    next_t = now
                self._stop.wait(next_t - now)
        finally:
            self._close()
            self.cpu_seconds = time.thread_time() - cpu0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="melt-metrics-scraper", daemon=True)
            self._thread.start()

    def stop(self) -> dict:
        if self._stats is not None:
            return self._stats
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s * 2 + 5)
        self._stats = {"scrapes": self.scrapes, "ok": self.ok, "failures": self.failures,
                       "callback_errors": self.callback_errors, "last_error": self.last_error,
                       "path": self.path, "cpu_seconds": round(self.cpu_seconds, 6)}
        return self._stats
