"""Where a request waits, seen from the server's side while a client runs (scripts/gpu/vllm_compare.py).

A client's TTFT is longer than vLLM's own TTFT histogram by whatever happens outside the engine's clock, which starts
when the API server renders the request and stops when it handles the first output. `Probe` samples, every 250 ms:

- the kernel's socket queues on the server's port (/proc/net/tcp, nothing to install): bytes a client sent that the
  API server has not read yet (before the engine's clock), bytes the server wrote that the client has not read yet
  (after it), and the listen socket's accept queue;
- CPU seconds of each server process (is the API server's one core saturated?);
- once a second, the engine's own counters from /metrics: requests running and waiting, first tokens produced, requests
  finished, preemptions, KV-cache use. running + waiting + finished is how many requests the engine has seen, so
  "sent by the client" minus that is how many were still outside it.

Both tools' runs are probed the same way, so the probe's own cost (one /metrics scrape a second) is in both.
"""
from __future__ import annotations

import threading
import time

from engines.supervisor import direct_opener
from telemetry.engine_metrics import parse_prometheus

_ESTABLISHED, _LISTEN = "01", "0A"
_COUNTERS = {"running": "vllm:num_requests_running", "waiting": "vllm:num_requests_waiting",
             "first_tokens": "vllm:time_to_first_token_seconds_count", "finished": "vllm:request_success_total",
             "preemptions": "vllm:num_preemptions_total", "kv_usage": "vllm:kv_cache_usage_perc",
             "prompt_tokens": "vllm:prompt_tokens_total", "gen_tokens": "vllm:generation_tokens_total"}


def socket_queues(port: int) -> dict[str, int]:
    """Loopback TCP queues around `port`. A server-side socket's rx queue is request bytes the server has not read;
    a client-side socket's rx queue is response bytes the client has not read; the listening socket's rx queue is
    connections waiting to be accepted."""
    hexport = f"{port:04X}"
    s = {"srv_conns": 0, "srv_unread_conns": 0, "srv_unread_bytes": 0, "srv_unacked_bytes": 0,
         "cli_unread_conns": 0, "cli_unread_bytes": 0, "accept_queue": 0}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, remote, st, queues = parts[1], parts[2], parts[3], parts[4]
                    tx, rx = (int(x, 16) for x in queues.split(":"))
                    if local.endswith(":" + hexport):
                        if st == _LISTEN:
                            s["accept_queue"] += rx
                        elif st == _ESTABLISHED:
                            s["srv_conns"] += 1
                            s["srv_unacked_bytes"] += tx
                            if rx:
                                s["srv_unread_conns"] += 1
                                s["srv_unread_bytes"] += rx
                    elif remote.endswith(":" + hexport) and st == _ESTABLISHED and rx:
                        s["cli_unread_conns"] += 1
                        s["cli_unread_bytes"] += rx
        except OSError:
            continue
    return s


def scrape(base_url: str, timeout: float = 5) -> dict:
    """The server's /metrics, parsed ({sample name: [(labels, value)]})."""
    return parse_prometheus(direct_opener().open(f"{base_url}/metrics", timeout=timeout).read().decode())


def total(parsed: dict, name: str) -> float:
    """A metric summed over its label sets (0 when absent)."""
    return float(sum(v for _labels, v in parsed.get(name, [])))


def engine_counters(base_url: str) -> dict[str, float]:
    p = scrape(base_url)
    return {k: total(p, name) for k, name in _COUNTERS.items()}


def process_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of each process of the server tree, keyed "name pid"."""
    import psutil

    out = {}
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return out
    for p in procs:
        try:
            t = p.cpu_times()
            out[f"{p.name()} {p.pid}"] = t.user + t.system
        except psutil.Error:
            continue
    return out


class Probe(threading.Thread):
    """Samples until stop(); `samples` is a list of dicts with wall-clock `t` (time.time()) and `mono`
    (time.perf_counter(), the clock vllm bench stamps its requests with)."""

    def __init__(self, base_url: str, port: int, server_pid: int, period_s: float = 0.25, metrics_every: int = 4):
        super().__init__(daemon=True)
        self.base_url, self.port, self.server_pid = base_url, port, server_pid
        self.period_s, self.metrics_every = period_s, metrics_every
        self.samples: list[dict] = []
        self._done = threading.Event()

    def run(self) -> None:
        last_cpu, last_t, i = process_cpu(self.server_pid), time.perf_counter(), 0
        while not self._done.wait(self.period_s):
            now = time.perf_counter()
            row: dict = {"t": round(time.time(), 3), "mono": round(now, 3), **socket_queues(self.port)}
            cpu = process_cpu(self.server_pid)
            # % of one core per process over the last period; the API server is the root (lowest pid)
            row["cpu_pct"] = {k: round(100 * (v - last_cpu.get(k, v)) / (now - last_t), 1) for k, v in cpu.items()}
            last_cpu, last_t = cpu, now
            if i % self.metrics_every == 0:
                try:
                    row.update(engine_counters(self.base_url))
                except Exception as e:  # noqa: BLE001 - a busy server may time out a scrape; keep sampling
                    row["metrics_error"] = repr(e)[:200]
            i += 1
            self.samples.append(row)

    def stop(self) -> list[dict]:
        self._done.set()
        self.join(timeout=10)
        return self.samples
