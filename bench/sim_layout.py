"""A recipe's layout predicted by the simulator in virtual time: seconds of CPU, no sockets, no processes. SIMULATED.

What: `predict(recipe, concurrency, ...)` plans the recipe (bench.plan: refused with the planner's reason when it
does not fit), builds for every instance the simulator's own model (engines.sim.model.PerfModel with its TP and
the planner's KV tokens, the same knobs `--recipe R --engine sim` gives the sim processes, bench/deploy.py), and
runs each instance's share of a closed loop of `concurrency` users through engines.sim.scheduler's virtual-time
loop with the default API-server host profile and text prompts. DP = N is N replicas of the instance.
Why: the HTTP path (`./melt sweep --recipe R --engine sim`) runs the sim in real time, one process per instance;
on a small machine several processes and a thousand streams fall behind the wall clock (tokens arrive coalesced,
TTFT and TPOT are the machine's, not the model's). This is the same model without that limit.

Approximations, said where they are made: the users are split between the instances by traffic weight (Melt's
client routes each request by weight; with equal replicas that is exact, with unequal ones a slower instance holds
more users than its weight); an instance's GPU power is engines.sim.telemetry's step-power rule applied to the
level's average step (busy share x its average intensity) rather than step by step.
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.cost import usd_per_million_tokens
from catalog.models import GPUSpec
from catalog.recipes import Recipe


@dataclass(frozen=True)
class InstancePrediction:
    name: str
    tp: int
    users: int
    kv_tokens: int              # the planner's, per replica
    output_tok_s: float
    ttft_p50_ms: float
    ttft_mean_ms: float
    power_w: float              # all its GPUs, average over the level


@dataclass(frozen=True)
class LayoutPrediction:
    recipe: str
    concurrency: int
    gpu_count: int
    instances: list[InstancePrediction]
    idle_gpus: int              # GPUs of the box no instance uses (drawing idle power)
    idle_w: float

    @property
    def output_tok_s(self) -> float:
        return sum(i.output_tok_s for i in self.instances)

    def _by_tokens(self, key: str) -> float:
        """Mean over the box's requests (each instance weighted by its output, i.e. by its requests)."""
        return sum(getattr(i, key) * i.output_tok_s for i in self.instances) / self.output_tok_s

    @property
    def ttft_mean_ms(self) -> float:
        return self._by_tokens("ttft_mean_ms")

    @property
    def ttft_p50_ms(self) -> float:
        """The instances' medians weighted by their requests (not the pooled median)."""
        return self._by_tokens("ttft_p50_ms")

    @property
    def power_w(self) -> float:
        return sum(i.power_w for i in self.instances) + self.idle_gpus * self.idle_w

    @property
    def joules_per_token(self) -> float:
        return self.power_w / self.output_tok_s

    def usd_per_million(self, price_per_gpu_hour: float) -> float | None:
        return usd_per_million_tokens(self.output_tok_s, self.gpu_count, price_per_gpu_hour)


def _split(total: int, weights: list[float]) -> list[int]:
    """`total` users over the weights, largest remainders, every instance with weight > 0 at least one."""
    s = sum(weights)
    raw = [total * w / s for w in weights]
    out = [max(1 if w > 0 else 0, int(r)) for r, w in zip(raw, weights)]
    for k in sorted(range(len(raw)), key=lambda k: raw[k] - int(raw[k]), reverse=True):
        if sum(out) >= total:
            break
        out[k] += 1
    return out


def predict(recipe: Recipe, concurrency: int, *, gpu: GPUSpec | None = None, count: int | None = None,
            input_len: int = 512, output_len: int = 128, requests_per_user: int = 3) -> LayoutPrediction:
    """The layout at `concurrency` closed-loop users, each sending `requests_per_user` requests (in virtual time)."""
    from bench.deploy import DeployRefused, gpu_sharers
    from bench.plan import plan
    from catalog import get_gpu, get_model, load_models
    from engines.sim.host import load_host_profile
    from engines.sim.model import PerfModel, SimKnobs
    from engines.sim.scheduler import simulate_closed_loop
    from engines.sim.telemetry import GpuTelemetryModel

    gpu = gpu or get_gpu(recipe.gpu)
    n = count or recipe.count or recipe.gpus_used()
    planned = plan(recipe, gpu, load_models(), count=n)
    if not planned.fits:
        raise DeployRefused(f"refused before launch: {planned.verdict()}")
    host = load_host_profile(None)
    replicas = [(inst, ip) for inst, ip in zip(recipe.instances, planned.instances) for _ in range(inst.dp)]
    users = _split(concurrency, [inst.weight / inst.dp for inst, _ in replicas])
    # replicas on the same GPU split it as `--recipe R --engine sim` does (bench.deploy.gpu_sharers): 1/k each
    gpus_of, k_seen = [], {}
    for inst, _ in replicas:
        k_seen[inst.name] = k_seen.get(inst.name, -1) + 1
        k = k_seen[inst.name]
        gpus_of.append(inst.gpu_list[k * inst.tp:(k + 1) * inst.tp] or [0])
    out = []
    for (inst, ip), c, k in zip(replicas, users, gpu_sharers(gpus_of)):
        if c == 0:
            continue
        share = 1.0 / k
        quant = (inst.quantization or "").lower()
        knobs = SimKnobs(mem_fraction=min(1.0, ip.fraction), max_num_seqs=inst.max_seqs,
                         max_model_len=inst.max_model_len, tp=inst.tp, kv_cache_tokens=ip.fit.kv_tokens,
                         weight_dtype=quant or inst.dtype or "bfloat16", gpu_share=share,
                         kv_cache_dtype=inst.kv_cache_dtype or "auto")
        perf = PerfModel(gpu, get_model(inst.model), knobs, host=host)
        lv = simulate_closed_loop(perf, c, c * requests_per_user, input_len, output_len, host=host, text_prompt=True)
        tel = GpuTelemetryModel(gpu, 0.0, knobs.mem_fraction, peak_flops=perf.peak_flops,
                                bandwidth_bytes_s=gpu.mem_bandwidth_gbs * 1e9)
        st = lv.engine
        busy = min(1.0, st.busy_s / lv.duration_s)
        busy_w = tel.step_power(st.busy_s, st.bytes_moved / inst.tp, st.flops / inst.tp)
        power = inst.tp * (busy * busy_w + (1 - busy) * tel.idle_w) * share  # a shared GPU's power is counted once
        out.append(InstancePrediction(inst.name if inst.dp == 1 else f"{inst.name}-dp", inst.tp, c, ip.fit.kv_tokens,
                                      lv.output_throughput, lv.p50_ttft_ms, lv.mean_ttft_ms, power))
    used = len({g for inst in recipe.instances for g in inst.gpu_list})
    idle = GpuTelemetryModel(gpu, 0.0, 0.9).idle_w
    return LayoutPrediction(recipe.name, concurrency, n, out, max(0, n - used), idle)
