"""python -m engines.sim.loadtest: can the simulator keep up with N concurrent streams on THIS machine?

Starts `python -m engines.sim` on a free loopback port (or uses --url), runs a closed loop of C streaming users with
a deliberately minimal aiohttp client (no JSON parsing of token chunks; the true count comes from usage), then prints
what the client saw next to what the simulator predicts for the same closed loop in virtual time, plus the
simulator's own lag and chunk coalescing from /metrics. If the wall-clock numbers track the virtual ones, modelled
time stayed honest; `tokens/chunk > 1` shows where the server coalesced tokens because it fell behind.

Benchmark script, not a test: the load generator shares the CPU with the server, so results depend on the machine.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _start_server(gpu: str, model: str, extra: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "engines.sim", "--gpu", gpu, "--model", model, "--port", "0",
                             "--log-level", "warning", *extra], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        m = re.search(r"melt-sim ready: .* at (http://\S+) ", line)
        if m:
            return proc, m.group(1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"sim did not start (exit {proc.poll()})")


def _scrape(url: str) -> dict[str, float]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    text = opener.open(url + "/metrics", timeout=60).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("melt:sim_") or line.startswith("vllm:num_preemptions"):
            name, _, value = line.rpartition(" ")
            out[re.sub(r"\{.*\}", "", name) + (re.search(r'le="([^"]+)"', name) and
                                               "@" + re.search(r'le="([^"]+)"', name).group(1) or "")] = float(value)
    return out


async def _closed_loop(url: str, model: str, users: int, per_user: int, input_len: int, output_len: int) -> dict:
    import aiohttp

    body = json.dumps({"model": model, "prompt": list(range(1, input_len + 1)), "max_tokens": output_len,
                       "min_tokens": output_len, "ignore_eos": True, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    headers = {"Content-Type": "application/json"}
    ttfts: list[float] = []
    e2es: list[float] = []
    errors: list[str] = []
    tokens = 0
    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=600, sock_read=600)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        async def user() -> None:
            nonlocal tokens
            for _ in range(per_user):
                t0 = time.perf_counter()
                first = None
                last = b""
                try:
                    async with session.post(url + "/v1/completions", data=body, headers=headers) as r:
                        if r.status != 200:
                            errors.append(f"HTTP {r.status}")
                            continue
                        async for data in r.content.iter_any():
                            if first is None:
                                first = time.perf_counter()
                            last = last[-200:] + data
                    i = last.find(b'"completion_tokens":')
                    if i < 0:
                        errors.append("no usage")
                        continue
                    tokens += int(last[i + 20:last.index(b"}", i)])
                    ttfts.append(first - t0)
                    e2es.append(time.perf_counter() - t0)
                except Exception as e:  # noqa: BLE001 - count every failure
                    errors.append(f"{type(e).__name__}: {e}"[:120])

        t0 = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(users)))
        duration = time.perf_counter() - t0
    n = len(ttfts)
    return {"ok": n, "errors": len(errors), "error_sample": errors[:3], "duration_s": duration,
            "output_tok_s": tokens / duration, "mean_ttft_ms": 1e3 * sum(ttfts) / max(n, 1),
            "mean_e2e_ms": 1e3 * sum(e2es) / max(n, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engines.sim.loadtest", description=__doc__.splitlines()[0])
    p.add_argument("--url", help="an already running sim (default: start one)")
    p.add_argument("--gpu", default="H100-SXM-80GB")
    p.add_argument("--model", default="Qwen/Qwen3-0.6B")
    p.add_argument("--concurrency", type=int, default=10000)
    p.add_argument("--requests-per-user", type=int, default=1)
    p.add_argument("--input-len", type=int, default=512)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--host-profile", default="typical-datacenter-core",
                   help="API-server host profile for the started sim AND the virtual loop ('none': engine only)")
    a = p.parse_args(argv)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if a.concurrency + 64 > hard:
        print(f"warning: open-files limit {hard} is below the concurrency", file=sys.stderr)

    proc = None
    url = a.url
    if not url:
        proc, url = _start_server(a.gpu, a.model, ["--host-profile", a.host_profile])
    try:
        before = _scrape(url)
        import uvloop

        cpu0 = os.times()
        res = uvloop.run(_closed_loop(url, a.model, a.concurrency, a.requests_per_user, a.input_len, a.output_len))
        cpu1 = os.times()
        after = _scrape(url)
    finally:
        if proc is not None:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(30)

    from catalog import get_gpu, get_model
    from engines.sim.model import PerfModel
    from engines.sim.host import load_host_profile
    from engines.sim.scheduler import simulate_closed_loop

    host = None if a.host_profile.lower() == "none" else load_host_profile(a.host_profile)
    virt = simulate_closed_loop(PerfModel(get_gpu(a.gpu), get_model(a.model), host=host), a.concurrency,
                                a.concurrency * a.requests_per_user, a.input_len, a.output_len, host=host)

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    steps = delta("melt:sim_step_lag_seconds_count")
    buckets = sorted((float(k.split("@")[1]), delta(k)) for k in after
                     if k.startswith("melt:sim_step_lag_seconds_bucket@") and not k.endswith("+Inf"))

    def lag_quantile(q: float) -> str:
        for bound, count in buckets:
            if steps and count >= q * steps:
                return f"<= {bound * 1e3:g} ms"
        return "> 10 s"

    chunks, toks = delta("melt:sim_stream_chunks_total"), delta("melt:sim_stream_tokens_total")
    print(f"host profile {a.host_profile} (token-id prompts)")
    print(f"SIMULATED {a.model} on {a.gpu}: {a.concurrency} users x {a.requests_per_user} request(s), "
          f"{a.input_len} in / {a.output_len} out, client + server on this machine ({os.cpu_count()} CPUs)")
    print(f"{'':24} {'wall clock (client)':>20} {'virtual time (model)':>22}")
    print(f"{'duration s':24} {res['duration_s']:>20.1f} {virt.duration_s:>22.1f}")
    print(f"{'output tok/s':24} {res['output_tok_s']:>20.0f} {virt.output_throughput:>22.0f}")
    print(f"{'mean TTFT ms':24} {res['mean_ttft_ms']:>20.1f} {virt.mean_ttft_ms:>22.1f}")
    print(f"{'mean E2E ms':24} {res['mean_e2e_ms']:>20.1f} {virt.mean_e2e_ms:>22.1f}")
    print(f"requests ok {res['ok']}, errors {res['errors']} {res['error_sample'] or ''}")
    print(f"server steps {steps:.0f}, step lag p50 {lag_quantile(0.5)}, p90 {lag_quantile(0.9)}, "
          f"p99 {lag_quantile(0.99)}, max {after.get('melt:sim_lag_max_seconds', 0) * 1e3:.0f} ms (since start)")
    print(f"SSE chunks {chunks:.0f} for {toks:.0f} tokens: {toks / max(chunks, 1):.2f} tokens/chunk; "
          f"preemptions {delta('vllm:num_preemptions_total'):.0f}")
    print(f"client CPU {cpu1.user - cpu0.user + cpu1.system - cpu0.system:.1f} s; load average now "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0 if res["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
