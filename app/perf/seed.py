"""Synthetic but self-consistent run history, written through the storage models into a real SQLite file.

For the dashboard's tests and its render benchmark, and for a demo without running anything:
    python -m app.perf.seed --db /tmp/demo.db --runs 4 --levels 1,4,16,64 --requests 200

Closed-loop users (each sends its next request when the previous one ends) with a latency model that
worsens with concurrency, so throughput/latency curves have the usual shape. Level summaries are computed
from the generated request rows with the same definitions the sweep uses, so queries can be checked
against them. Every seeded run is marked simulated unless told otherwise.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from sqlalchemy import insert

from storage.db import open_db
from storage.models import (EngineInstance, EngineMetricSample, Event, Level, LevelStatus, Request, Run, RunStatus,
                            TelemetrySample)


def _pcts(a: np.ndarray) -> dict:
    if a.size == 0:
        return {}
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p95": float(np.percentile(a, 95)), "p99": float(np.percentile(a, 99)), "max": float(a.max())}


def run_config(name: str, engine: str, model: str, gpu: str, levels: Sequence[int], requests: int,
               tags: Sequence[str], gpu_count: int, price: float | None) -> dict:
    """A valid RunConfig JSON (so 'run again with this config' works on seeded runs)."""
    from bench.config import RunConfig

    eng = {"kind": engine, "model": model}
    if engine == "sim":
        eng["sim_gpu"] = gpu
    cfg = RunConfig.model_validate({
        "name": name, "tags": list(tags), "engine": eng, "levels": list(levels), "gpu": gpu, "gpu_count": gpu_count,
        "price_per_gpu_hour": price,
        "workload": {"input_len": {"min": 512, "max": 512}, "output_len": {"min": 128, "max": 128},
                     "requests": requests, "slo": {"ttft_ms": 500, "tpot_ms": 50}},
    })
    return cfg.model_dump(mode="json")


def seed_run(db, *, name: str = "seeded sweep", engine: str = "sim", model: str = "Qwen/Qwen3-0.6B",
             gpu: str = "H100-SXM-80GB", gpu_count: int = 1, levels: Sequence[int] = (1, 4, 16, 64),
             requests_per_level: int = 100, status: str = "completed", simulated: bool | None = None,
             tags: Sequence[str] = (), notes: str = "", error_rate: float = 0.0, speed: float = 1.0,
             seed: int = 0, created_at: datetime | None = None, price: float | None = 2.5,
             output_tokens: int = 128, input_tokens: int = 512, with_series: bool = True) -> int:
    """Insert one run. status: completed | running (last level half done, heartbeat now) | starting (engine still
    loading, no levels) | failed | cancelled (stopped a third of the way into its last level). speed scales
    throughput (to make runs differ). Returns the run id."""
    rng = np.random.default_rng(seed)
    simulated = (engine == "sim") if simulated is None else simulated
    factory = open_db(db)
    st = RunStatus(status)

    # --- generate levels and requests in memory first, so the run's time span is known -------------------------
    gap_ns = 2_000_000_000  # idle time between levels
    t = 0
    gen = []
    n_levels = 0 if st is RunStatus.starting else len(levels)
    for i, c in enumerate(levels[:n_levels]):
        partial = st in (RunStatus.running, RunStatus.cancelled) and i == n_levels - 1
        n = (requests_per_level // (3 if st is RunStatus.cancelled else 2)) if partial else requests_per_level
        users = min(c, requests_per_level)
        tpot = (4.0 + 0.08 * c ** 0.9) / speed * rng.uniform(0.9, 1.1, n)
        ttft = (15.0 + 0.9 * c) / speed * rng.lognormal(0, 0.35, n)
        e2e = ttft + tpot * (output_tokens - 1)
        ok = rng.random(n) >= error_rate
        e2e_ns = (e2e * 1e6).astype(np.int64)
        send = np.zeros(n, dtype=np.int64)
        user_clock = np.zeros(users, dtype=np.int64)
        for k in range(n):  # closed loop: request k goes to the user that frees up first (round-robin here)
            u = k % users
            send[k] = user_clock[u]
            user_clock[u] += e2e_ns[k] + 200_000
        start_ns, end_ns = t, t + int((send + e2e_ns).max())
        gen.append(dict(c=c, n=n, partial=partial, send=send + t, ttft=ttft, tpot=tpot, e2e=e2e, ok=ok,
                        start_ns=start_ns, end_ns=end_ns))
        t = end_ns + gap_ns
    startup_ns = 8_000_000_000
    span_ns = startup_ns + t

    now = datetime.now(timezone.utc)
    if created_at is None:
        created_at = now - timedelta(seconds=span_ns / 1e9 + (0 if st in (RunStatus.running, RunStatus.starting) else 60))
    base_ns = int(created_at.timestamp() * 1e9) + startup_ns
    finished = st.finished

    # --- rows -------------------------------------------------------------------------------------------------
    with factory.begin() as s:
        run = Run(name=name, status=st, created_at=created_at, started_at=created_at,
                  finished_at=(created_at + timedelta(seconds=span_ns / 1e9)) if finished else None,
                  config=run_config(name, engine, model, gpu, levels, requests_per_level, tags, gpu_count, price),
                  engine_kind=engine, model=model, gpu=gpu, gpu_count=gpu_count, simulated=simulated,
                  tags=list(tags), notes=notes, versions={"melt": "0.1.0", "engine": f"{engine}-seed"},
                  host={"hostname": "seed"}, heartbeat_at=now if not finished else None,
                  price_per_gpu_hour=price, error="engine exited with code 1" if st is RunStatus.failed else None)
        s.add(run)
        s.flush()
        run_id = run.id
        loading = st is RunStatus.starting
        inst = EngineInstance(run_id=run_id, kind=engine, model=model, argv=[engine, "serve", model],
                              version=f"{engine}-seed", base_url="http://127.0.0.1:8000", pid=None,
                              state="starting" if loading else ("stopped" if finished else "ready"),
                              phase="loading weights" if loading else "ready",
                              log_tail="INFO starting server\nINFO loading weights\n" + ("" if loading else "INFO ready\n"),
                              gpus=list(range(gpu_count)), launched_at=created_at,
                              ready_at=None if loading else created_at + timedelta(seconds=startup_ns / 1e9),
                              startup_s=None if loading else startup_ns / 1e9)
        s.add(inst)
        s.flush()
        s.add(Event(run_id=run_id, t_ns=base_ns - startup_ns, kind="phase", message="launching engine"))
        total_out = 0.0
        peak, best_good = 0.0, 0.0
        for i, g in enumerate(gen):
            n = g["n"]
            send_abs = g["send"] + base_ns
            done = g["partial"]
            lvl_status = (LevelStatus.cancelled if st is RunStatus.cancelled else LevelStatus.running) if done \
                else LevelStatus.completed
            dur = (g["end_ns"] - g["start_ns"]) / 1e9
            ok = g["ok"]
            out_tok = int(ok.sum()) * output_tokens
            summary = {}
            tel = {}
            if not done:
                good = ok & (g["ttft"] <= 500) & (g["tpot"] <= 50)
                summary = {
                    "concurrency": g["c"], "n_sent": n, "n_ok": int(ok.sum()), "n_err": int((~ok).sum()),
                    "duration_s": dur, "output_tok_s": out_tok / dur,
                    "total_tok_s": (out_tok + int(ok.sum()) * input_tokens) / dur, "req_s": int(ok.sum()) / dur,
                    "ttft_ms": _pcts(g["ttft"][ok]), "tpot_ms": _pcts(g["tpot"][ok]), "itl_ms": _pcts(g["tpot"][ok]),
                    "e2e_ms": _pcts(g["e2e"][ok]), "goodput_req_s": int(good.sum()) / dur,
                    "input_tokens": int(ok.sum()) * input_tokens, "output_tokens": out_tok,
                    "client_cpu_pct": min(95.0, 5 + g["c"] * 0.05), "client_bound": False,
                    "start_ns": g["start_ns"] + base_ns, "end_ns": g["end_ns"] + base_ns,
                }
                watts = (150 + 450 * min(1.0, 0.2 + 0.1 * np.log2(g["c"] + 1))) * gpu_count
                tel = {"avg_power_w": watts, "peak_power_w": watts * 1.08, "energy_j": watts * dur,
                       "joules_per_output_token": watts * dur / max(out_tok, 1), "verdict": "ok",
                       "simulated": simulated}
                peak = max(peak, summary["output_tok_s"])
                best_good = max(best_good, summary["goodput_req_s"])
                total_out += out_tok
            lvl = Level(run_id=run_id, idx=i, concurrency=g["c"], status=lvl_status,
                        started_at=created_at + timedelta(seconds=(startup_ns + g["start_ns"]) / 1e9),
                        finished_at=None if done else created_at + timedelta(seconds=(startup_ns + g["end_ns"]) / 1e9),
                        start_ns=g["start_ns"] + base_ns, end_ns=None if done else g["end_ns"] + base_ns,
                        n_requested=requests_per_level, n_sent=n, n_ok=int(ok.sum()), n_err=int((~ok).sum()),
                        summary=summary, telemetry=tel, **({} if done else {
                            "duration_s": dur, "output_tok_s": summary["output_tok_s"],
                            "total_tok_s": summary["total_tok_s"], "req_s": summary["req_s"],
                            "goodput_req_s": summary["goodput_req_s"], "ttft_p50_ms": summary["ttft_ms"]["p50"],
                            "ttft_p99_ms": summary["ttft_ms"]["p99"], "tpot_p50_ms": summary["tpot_ms"]["p50"],
                            "e2e_p50_ms": summary["e2e_ms"]["p50"], "client_cpu_pct": summary["client_cpu_pct"]}))
            s.add(lvl)
            s.flush()
            s.add(Event(run_id=run_id, t_ns=g["start_ns"] + base_ns, kind="phase", level_id=lvl.id,
                        message=f"level {i + 1}/{len(levels)}: concurrency {g['c']}"))
            rows = [{"run_id": run_id, "level_id": lvl.id, "seq": k, "warmup": False, "send_ns": int(send_abs[k]),
                     "queue_ms": 0.1, "ttft_ms": float(g["ttft"][k]) if ok[k] else None,
                     "e2e_ms": float(g["e2e"][k]) if ok[k] else float(g["ttft"][k]),
                     "input_tokens": input_tokens if ok[k] else None, "output_tokens": output_tokens if ok[k] else None,
                     "chunks": output_tokens if ok[k] else 0, "itl_mean_ms": float(g["tpot"][k]) if ok[k] else None,
                     "itl_max_ms": float(g["tpot"][k]) * 3 if ok[k] else None, "ok": bool(ok[k]),
                     "status_code": 200 if ok[k] else 503,
                     "error": None if ok[k] else "HTTP 503: server overloaded"} for k in range(n)]
            for j in range(0, len(rows), 20_000):
                s.execute(insert(Request), rows[j:j + 20_000])
        if finished or st is RunStatus.running:
            run.peak_output_tok_s = peak or None
            run.best_goodput_req_s = best_good or None
        if with_series and gen:
            _series(s, run_id, inst.id, gen, base_ns, gpu_count, simulated, output_tokens, rng)
        if finished:
            s.add(Event(run_id=run_id, t_ns=base_ns + t, kind="phase", message=f"run {st.value}"))
    return run_id


def seed_services(db, run_id: int, per_level: Mapping[int, Sequence[Mapping]],
                  asked: Mapping[str, float] | None = None) -> None:
    """Give a seeded run non-LLM services: `per_level` {level index: [service summary as bench/service_load.py
    stores it (name, sent, ok, err, errors, req_s, latency_ms, ...)]} goes into those levels' summary["services"];
    `asked` {name: req/s} adds each service to the stored config (a custom engine with a command and its `request`),
    so the config stays a valid RunConfig."""
    from sqlalchemy import select

    from bench.config import RunConfig

    with open_db(db).begin() as s:
        run = s.get(Run, run_id)
        if asked:
            cfg = dict(run.config)
            cfg["services"] = [{"name": name, "weight": 0, "request": {"path": f"/{name}", "rate": rate},
                                "engine": {"kind": "custom", "model": name, "engine_cmd": [name, "{port}"]}}
                               for name, rate in asked.items()]
            run.config = RunConfig.model_validate(cfg).model_dump(mode="json")
        for lv in s.scalars(select(Level).where(Level.run_id == run_id)).all():
            if lv.idx in per_level:
                lv.summary = {**(lv.summary or {}), "services": [dict(x) for x in per_level[lv.idx]]}


def _series(s, run_id, instance_id, gen, base_ns, gpu_count, simulated, output_tokens, rng) -> None:
    """Telemetry at 4 Hz per GPU and engine metrics at 1 Hz that follow the levels' load."""
    end = max(g["end_ns"] for g in gen)
    tel, em = [], []
    gen_total = 0.0
    for k in range(int(end / 250_000_000) + 1):
        t = k * 250_000_000
        active = next((g for g in gen if g["start_ns"] <= t <= g["end_ns"]), None)
        load = 0.0 if active is None else min(1.0, 0.25 + 0.12 * np.log2(active["c"] + 1))
        for gi in range(gpu_count):
            util = 100 * load * rng.uniform(0.95, 1.0)
            tel.append({"run_id": run_id, "t_ns": base_ns + t, "gpu_index": gi, "simulated": simulated,
                        "util_gpu": util, "util_mem": util * 0.6, "mem_used_mb": 72_000.0, "mem_total_mb": 81_559.0,
                        "power_w": 70 + 560 * load + rng.normal(0, 25), "power_avg_w": 70 + 560 * load,
                        "energy_j": None,
                        "temp_gpu_c": 35 + 35 * load, "temp_mem_c": 40 + 30 * load,
                        "sm_clock_mhz": 1980.0 if load else 345.0, "mem_clock_mhz": 2619.0,
                        "throttle_reasons": 0, "pstate": 0 if load else 8})
        if k % 4 == 0:
            c = active["c"] if active else 0
            gen_total += (c * 1000 / (4.0 + 0.08 * c ** 0.9)) if c else 0.0
            em.append({"run_id": run_id, "instance_id": instance_id, "t_ns": base_ns + t, "running": float(min(c, 256)),
                       "waiting": float(max(0, c - 256)), "kv_cache_usage": min(1.0, c * 640 / 500_000),
                       "prompt_tokens_total": None, "generation_tokens_total": gen_total,
                       "preemptions_total": 0.0, "requests_success_total": None})
    s.execute(insert(TelemetrySample), tel)
    s.execute(insert(EngineMetricSample), em)


def seed_blitz(db, *, gpu: str = "H200-141GB", engine: str = "vllm", simulated: bool = False, speed: float = 1.0,
               health: str = "PASS", seed: int = 0, levels: Sequence[int] = (8, 16, 32, 32)) -> int:
    """A finished Blitz run: seed_run's levels become search levels and the last one the measured level, with a
    health verdict and GPU facts, and its result written the way the worker writes it (bench.blitz_run)."""
    from sqlalchemy import select

    from bench.blitz import TAG
    from bench.blitz_run import blitz_config, store_result

    rid = seed_run(db, name=f"Blitz {gpu}", engine=engine, gpu=gpu, levels=levels, requests_per_level=80,
                   simulated=simulated, tags=[TAG], speed=speed, seed=seed)
    cfg = blitz_config("sim" if engine == "sim" else engine, gpu, 5.0).model_dump(mode="json")
    with open_db(db).begin() as s:
        run = s.get(Run, rid)
        run.config = cfg
        lvs = s.scalars(select(Level).where(Level.run_id == rid).order_by(Level.idx)).all()
        for i, lv in enumerate(lvs):
            lv.summary = {**(lv.summary or {}), "blitz": {"phase": "measure" if i == len(lvs) - 1 else "search"},
                          "roofline": {"share": 0.2 * speed, "bound": "memory"}}
            lv.telemetry = {**(lv.telemetry or {}), "peak_temp_gpu_c": 61.0, "throttled_pct": 0.0}
        t = (lvs[-1].end_ns or 0) + 1
        s.add(Event(run_id=rid, t_ns=t, kind="gpu_facts", message="GPU facts at start",
                    payload={"phase": "start", "gpus": {"0": {"name": f"NVIDIA {gpu}", "driver": "580.65",
                                                              "vbios": "96.00.AF.00.01"}}}))
        reasons = ([] if health == "PASS" else ["thermal slowdown 4% of load time"])
        if simulated:
            reasons.insert(0, "SIMULATED telemetry: this verdict checks the simulator's model, not real hardware.")
        s.add(Event(run_id=rid, t_ns=t + 1, kind="verdict", message=f"GPU health: {health}",
                    payload={"status": health, "reasons": reasons}))
        s.add(Event(run_id=rid, t_ns=t + 2, kind="blitz_search", message="saturated",
                    payload={"action": "measure", "concurrency": levels[-1],
                             "reason": "saturated: doubling 16 -> 32 changed steady output tok/s by +4.0% (< 10%)"}))
    store_result(rid, db)
    return rid


def seed_history(db, n_runs: int = 4, *, levels: Sequence[int] = (1, 4, 16, 64), requests_per_level: int = 100,
                 with_series: bool = True) -> list[int]:
    """A small mixed history: simulated and 'real' runs, different engines/speeds/tags."""
    kinds = [("sim", 1.0, True, ["baseline"]), ("vllm", 1.6, False, ["fp8"]), ("sglang", 1.3, False, []),
             ("sim", 0.8, True, ["demo", "baseline"])]
    ids = []
    for i in range(n_runs):
        eng, speed, sim, tags = kinds[i % len(kinds)]
        ids.append(seed_run(db, name=f"{eng} sweep {i + 1}", engine=eng, speed=speed, simulated=sim, tags=tags,
                            levels=levels, requests_per_level=requests_per_level, seed=i, with_series=with_series,
                            created_at=datetime.now(timezone.utc) - timedelta(hours=n_runs - i)))
    return ids


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m app.perf.seed", description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--levels", default="1,4,16,64")
    ap.add_argument("--requests", type=int, default=100, help="requests per level")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    ids = seed_history(Path(args.db), args.runs, levels=[int(x) for x in args.levels.split(",")],
                       requests_per_level=args.requests)
    print(f"seeded runs {ids} into {args.db} in {time.perf_counter() - t:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
